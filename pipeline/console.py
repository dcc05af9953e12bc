"""What a scan prints: Ray's and the storage libraries' notices that no user can act on are left out, in one place.

A scan's terminal shows forgescan's own lines, Ray Data's progress, warnings and errors that
name something to change. Left out (each still in Ray's session logs where Ray writes one):
- Python log records listed in QUIET_RECORDS (logger name -> message starts), such as the
  token-authentication notice of every private Ray instance, Ray Data's remarks about its own
  progress bars, botocore's "Found credentials" and gcsfs's experimental-features notice;
- INFO records of other libraries (only the `forgescan` logger speaks at INFO);
- native lines Ray's core worker writes straight to stderr, listed in QUIET_NATIVE_LINES, such
  as the error-level line about actor constructor arguments that every Ray Data actor pool
  prints (ray-project/ray#53727: Ray Data keeps those arguments alive, nothing to fix).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading

QUIET_RECORDS = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
    "ray.data._internal.progress": ("Progress will be logged because stdout", "Progress bars disabled",
                                    "Progress bars for operators disabled", "[dataset]: A new progress UI"),
    "ray.data._internal.progress.utils": ("Truncating long operator name",),
}
QUIET_NATIVE_LINES = (
    re.compile(rb"^\[[^\]]* E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in "
               rb"the object store and max_restarts > 0"),
)


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_logging() -> None:
    """forgescan's own INFO lines on stderr; other libraries' at WARNING; the QUIET_RECORDS left out."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("forgescan").setLevel(logging.INFO)
    for name, starts in QUIET_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(starts))


class _NativeStderrFilter:
    """fd 2 through a pipe: lines matching QUIET_NATIVE_LINES are dropped, everything else passes at once
    (a progress bar's carriage returns included); only a partial line that may yet become a quiet one
    waits for its end."""

    _END = b"\0forgescan-stderr-end\0"

    def __init__(self):
        sys.stderr.flush()
        self.original = os.dup(2)
        self.read_end, self.write_end = os.pipe()
        os.dup2(self.write_end, 2)
        self.thread = threading.Thread(target=self._pump, name="forgescan-stderr", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            data, stop, _ = (pending + chunk).partition(self._END)
            pending = self._emit(data)
            if stop:
                break
        if pending:
            self._write(pending)
        os.close(self.read_end)

    def _emit(self, data: bytes) -> bytes:
        """Write what is decided; return a trailing partial line that could still turn out quiet."""
        out = []
        for piece in re.split(rb"(?<=[\n\r])", data):
            if not piece:
                continue
            if piece.endswith((b"\n", b"\r")):
                if not any(pattern.match(piece) for pattern in QUIET_NATIVE_LINES):
                    out.append(piece)
            elif piece.startswith(b"["):
                self._write(b"".join(out))
                return piece
            else:
                out.append(piece)
        self._write(b"".join(out))
        return b""

    def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self.original, data):]
            except OSError:
                return

    def close(self) -> None:
        """Put fd 2 back, let the pump drain what is still in the pipe, and stop it."""
        sys.stderr.flush()
        os.dup2(self.original, 2)
        os.write(self.write_end, self._END)
        os.close(self.write_end)
        self.thread.join(timeout=5)
        os.close(self.original)


@contextlib.contextmanager
def quiet_console():
    """For a scan run from the command line: quiet_logging, and native stderr lines filtered until the end."""
    quiet_logging()
    native = _NativeStderrFilter()
    try:
        yield
    finally:
        native.close()
