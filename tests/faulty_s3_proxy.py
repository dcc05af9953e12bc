"""An HTTP proxy in front of the loopback S3 endpoint that injects real store faults.

It forwards every request to moto, except that it answers some with the
errors a real store produces: throttling (503 SlowDown) on a share of
requests, 403 AccessDenied for chosen keys, 404 NoSuchKey for keys that
"vanished" after listing, and 403 for chosen part numbers of multipart uploads
(an upload that fails half-way). Reads of `stalled_keys` wait until `release()`
or `stall_seconds`, so a test can hold a scan in the middle of its pipeline.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERROR_BODY = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'


class FaultyS3Proxy:
    def __init__(self, upstream: str, throttle_every: int = 0, denied_keys=(), vanished_keys=(),
                 reject_credentials: bool = False, rejected_upload_parts=(), stalled_keys=(), stall_seconds: float = 600):
        self.stalled_keys = set(stalled_keys)
        self.stall_seconds = stall_seconds
        self.released = threading.Event()
        self.rejected_upload_parts = {str(n) for n in rejected_upload_parts}
        self.reject_credentials = reject_credentials
        self.upstream = urllib.parse.urlparse(upstream)
        self.throttle_every = throttle_every
        self.denied_keys = set(denied_keys)
        self.vanished_keys = set(vanished_keys)
        self.counter = itertools.count(1)
        self.injected = {"throttled": 0, "denied": 0, "vanished": 0, "rejected_parts": 0}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def release(self) -> None:
        """Let the held reads of `stalled_keys` (and later ones) through."""
        self.released.set()

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _object_key(path: str) -> str:
        return urllib.parse.unquote(path.split("?", 1)[0]).split("/", 2)[-1]

    def _is_stalled(self, method: str, path: str) -> bool:
        return method == "GET" and "list-type" not in path and self._object_key(path) in self.stalled_keys

    def _fault_for(self, method: str, path: str):
        key = self._object_key(path)
        is_object_read = method in ("GET", "HEAD") and "list-type" not in path and "/" in path.strip("/")
        with self.lock:
            if self.reject_credentials:
                return 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
            if is_object_read and key in self.denied_keys:
                self.injected["denied"] += 1
                return 403, "AccessDenied", "Access Denied"
            query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
            if method == "PUT" and set(query.get("partNumber", [])) & self.rejected_upload_parts:
                self.injected["rejected_parts"] += 1
                return 403, "AccessDenied", "Access Denied"
            if is_object_read and key in self.vanished_keys:
                self.injected["vanished"] += 1
                return 404, "NoSuchKey", "The specified key does not exist."
            if self.throttle_every and next(self.counter) % self.throttle_every == 0:
                self.injected["throttled"] += 1
                return 503, "SlowDown", "Please reduce your request rate."
        return None

    def _handler(proxy):  # noqa: N805 - the handler class closes over the proxy
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._is_stalled(self.command, self.path):
                    proxy.released.wait(timeout=proxy.stall_seconds)
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None:
                    status, code, message = fault
                    payload = ERROR_BODY.format(code=code, message=message).encode() if self.command != "HEAD" else b""
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        return Handler
