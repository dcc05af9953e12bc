"""Object storage: one way to name, open, list and read objects on S3, GCS and local disks.

Listing streams page by page (S3 `ListObjectsV2` pages, one directory at a
time elsewhere), so an archive of any size never sits in memory. Storage
problems a user can fix (missing bucket, rejected credentials, unreachable
endpoint) become one `StorageError` that names the location and the fix.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import re
import stat as stat_module
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec

MANIFEST_SUFFIXES = (".parquet", ".txt", ".lst", ".manifest", ".csv")
S3_RETRIES = {"max_attempts": 10, "mode": "adaptive"}  # botocore: backoff with jitter, throttling-aware


class StorageError(RuntimeError):
    """A storage problem the user can fix; the message names the location and the fix."""


class NotARegularFile(OSError):
    """A pipe, socket or device where a file was expected: reported, never opened."""


@dataclass(frozen=True)
class Location:
    """A parsed URI: `protocol` is `s3`, `gs` or `file`; `path` is what fsspec expects."""

    protocol: str
    path: str

    @property
    def uri(self) -> str:
        if self.protocol == "file":
            return "file://" + self.path
        return f"{self.protocol}://{self.path}"

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    def child(self, relative: str) -> "Location":
        return Location(self.protocol, self.path.rstrip("/") + "/" + relative.lstrip("/"))


def parse_location(uri: str) -> Location:
    """`s3://b/k`, `s3a://b/k`, `gs://b/k`, `gcs://b/k`, `file:///p` or a plain local path."""
    uri = str(uri)
    if "://" not in uri:
        return Location("file", str(Path(uri).expanduser().resolve()))
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("s3", "s3a", "s3n"):
        return Location("s3", rest)
    if scheme in ("gs", "gcs"):
        return Location("gs", rest)
    if scheme == "file":
        return Location("file", str(Path(rest).expanduser().resolve()))
    raise StorageError(f"Unsupported location {uri!r}: use s3://, gs://, file:// or a local path.")


def resolve_endpoint_url(endpoint_url: str | None) -> str | None:
    """The explicit endpoint, else the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL variables."""
    return endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem_for(protocol: str, endpoint_url: str | None = None, storage_options_json: str = "{}"):
    """An fsspec filesystem; cached per process so workers reuse connections."""
    return _cached_filesystem(protocol, resolve_endpoint_url(endpoint_url) if protocol == "s3" else None, storage_options_json)


@functools.lru_cache(maxsize=16)
def _cached_filesystem(protocol: str, endpoint_url: str | None, storage_options_json: str):
    options = json.loads(storage_options_json)
    if protocol == "s3":
        import s3fs

        config = dict(options.pop("config_kwargs", {}))
        config.setdefault("retries", S3_RETRIES)
        client = dict(options.pop("client_kwargs", {}))
        if endpoint_url:
            client["endpoint_url"] = endpoint_url
        return s3fs.S3FileSystem(client_kwargs=client, config_kwargs=config, **options)
    if protocol == "gs":
        return fsspec.filesystem("gcs", **options)
    return fsspec.filesystem("file")


STORE_CONNECT_SECONDS = 5.0  # one connection attempt to an object store's endpoint before it counts as failed
STORE_CONNECT_ATTEMPTS = 3  # attempts (1 s, then 2 s apart) before a scan or report gives up on an unreachable store
_GCS_ENDPOINT = "https://storage.googleapis.com"


def store_endpoint(location: Location, endpoint_url: str | None, storage_options_json: str = "{}") -> str | None:
    """The URL a store's client connects to (None for local files): what check_reachable probes and messages name."""
    if location.protocol == "s3":
        if endpoint_url:
            return endpoint_url
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return f"https://s3.{region}.amazonaws.com" if region else "https://s3.amazonaws.com"
    if location.protocol == "gs":
        options = json.loads(storage_options_json)
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        return options.get("endpoint_url") or (emulator if "://" in (emulator or "") else
                                               f"http://{emulator}" if emulator else _GCS_ENDPOINT)
    return None


def store_advice(location: Location) -> str:
    """What to check when a store cannot be reached, in that store's own terms."""
    if location.protocol == "gs":
        return ("Check the network (and HTTPS_PROXY) or, for an emulator, STORAGE_EMULATOR_HOST; credentials come from "
                "Application Default Credentials (`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS).")
    return ("Check --endpoint-url / AWS_ENDPOINT_URL (scheme, host and port), that the object store is running, and the "
            "network; credentials come from the AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).")


_reachable: set[tuple[str, int]] = set()


def check_reachable(location: Location, endpoint_url: str | None, storage_options_json: str = "{}") -> None:
    """Fail in seconds, naming the store's endpoint and the fix, when nothing accepts a connection there.

    A store's client retries connection errors for a minute or more with nothing on screen (right for a
    transient fault mid-scan, wrong for a mistyped endpoint): before the first request, a plain TCP
    connection is tried STORE_CONNECT_ATTEMPTS times, each failure logged, then StorageError. Skipped
    behind an HTTP(S) proxy, where the client does not connect directly.
    """
    import socket
    import time
    import urllib.request

    endpoint = store_endpoint(location, endpoint_url, storage_options_json)
    if endpoint is None:
        return
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
    host = parsed.hostname or ""
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        raise StorageError(f"Endpoint {strip_credentials(endpoint)!r} for {location.uri} has no valid port. "
                           + store_advice(location)) from None
    if (host, port) in _reachable:
        return
    if urllib.request.getproxies().get(parsed.scheme) and not urllib.request.proxy_bypass(host):
        return
    shown = strip_credentials(f"{parsed.scheme}://{parsed.netloc}")
    for attempt in range(1, STORE_CONNECT_ATTEMPTS + 1):
        try:
            socket.create_connection((host, port), timeout=STORE_CONNECT_SECONDS).close()
            _reachable.add((host, port))
            return
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            if isinstance(error, socket.gaierror) and error.errno == socket.EAI_NONAME:
                break  # no such host: asking again gives the same answer
        if attempt < STORE_CONNECT_ATTEMPTS:
            logging.getLogger("forgescan").warning(
                "forgescan: cannot connect to %s for %s (%s); retrying (%d of %d)", shown, location.uri, reason,
                attempt + 1, STORE_CONNECT_ATTEMPTS)
            time.sleep(attempt)
    raise StorageError(f"Cannot reach the object store for {location.uri} at {shown} ({reason}, attempt {attempt} of "
                       f"{STORE_CONNECT_ATTEMPTS}). "
                       + store_advice(location))


def storage_options_key(storage_options: dict | None) -> str:
    return json.dumps(storage_options or {}, sort_keys=True)


def describe_storage_error(location: Location, error: BaseException, endpoint_url: str | None = None) -> str:
    """A one-line explanation with the fix, never containing credentials."""
    text = f"{type(error).__name__}: {error}"
    text = strip_credentials(text)
    where = location.uri + (f" (endpoint {strip_credentials(endpoint_url)})" if endpoint_url else "")
    lowered = text.lower()
    if "nosuchbucket" in lowered or ("bucket" in lowered and "not exist" in lowered):
        return f"Bucket {location.bucket!r} does not exist at {where}. Check the bucket name, region and --endpoint-url."
    if isinstance(error, PermissionError) or any(
        k in lowered for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "forbidden", "403")
    ):
        return (
            f"Access to {where} was refused ({type(error).__name__}). Check the credentials in the standard AWS "
            "chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, instance role) and the bucket policy."
        )
    if "nocredentials" in lowered or "unable to locate credentials" in lowered:
        return f"No credentials found for {where}. Set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
    if any(k in lowered for k in ("could not connect", "connect timeout", "connection refused", "name or service not known",
                                  "endpointconnectionerror", "cannot connect to host")):
        return f"Cannot reach the object store for {where}. " + store_advice(location)
    if isinstance(error, FileNotFoundError):
        return f"{location.uri} does not exist. Check the path."
    return f"Cannot access {where}: {text}"


@dataclass(frozen=True)
class SourceKind:
    location: Location
    is_manifest: bool


def check_source(source: str, endpoint_url: str | None, storage_options: dict | None = None) -> SourceKind:
    """Fail early, with one clear message, when the source cannot be listed."""
    location = parse_location(source)
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_key(storage_options))
    endpoint = resolve_endpoint_url(endpoint_url) if location.protocol == "s3" else None
    is_manifest = location.path.lower().endswith(MANIFEST_SUFFIXES)
    check_reachable(location, endpoint, storage_options_key(storage_options))
    try:
        if location.protocol == "file":
            path = Path(location.path)
            if not path.exists():
                raise StorageError(f"Source {location.uri} does not exist. Pass an existing folder, a manifest file or an s3:// / gs:// URI.")
            if path.is_file() and not is_manifest:
                raise StorageError(
                    f"Source {location.uri} is a file but not a manifest ({', '.join(MANIFEST_SUFFIXES)}). "
                    "Pass its folder, or list URIs in a .txt/.parquet manifest."
                )
            return SourceKind(location, path.is_file())
        if is_manifest:
            fs.info(location.path)
        else:
            if location.protocol == "s3":
                fs.ls(location.bucket, detail=False)
            else:
                fs.ls(location.path, detail=False)
    except StorageError:
        raise
    except Exception as error:
        raise StorageError(describe_storage_error(location, error, endpoint)) from None
    return SourceKind(location, is_manifest)


def listing_entry(uri: str, size: int | None, etag: str | None, mtime, error: str | None = None) -> dict:
    """One listed object. `error` set means the object is reported as an error row and never opened."""
    if isinstance(mtime, (int, float)):
        mtime = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).isoformat()
    elif isinstance(mtime, dt.datetime):
        mtime = mtime.astimezone(dt.timezone.utc).isoformat()
    return {
        "uri": uri,
        "size_bytes": None if size is None else int(size),
        "etag": etag.strip('"') if isinstance(etag, str) else None,
        "mtime": None if mtime is None else str(mtime),
        "error": error,
    }


LISTING_PAGE_SIZE = 1000  # entries per listing page: what one S3 ListObjectsV2 call returns at most


def iter_listing(
    source: str,
    endpoint_url: str | None = None,
    storage_options: dict | None = None,
    page_size: int = LISTING_PAGE_SIZE,
    extensions: tuple[str, ...] = (),
    exclude: str | None = None,
) -> Iterator[list[dict]]:
    """Pages of listing entries (`uri`, `size_bytes`, `etag`, `mtime`, `error`) under `source`, streamed.

    `exclude` (a URI, normally the scan's output) is left out of the listing when it lies
    inside the source, so a scan never reads its own results. Objects that cannot be
    read as files (special files, broken links, unreadable folders, manifest lines with
    schemes forgescan does not read) are listed with `error` set: they become error rows.
    """
    location = parse_location(source)
    excluded = parse_location(exclude) if exclude else None
    if excluded is not None and (excluded.protocol != location.protocol or not is_inside(excluded, location)):
        excluded = None
    if location.path.lower().endswith(MANIFEST_SUFFIXES):
        entries = _iter_manifest(location, endpoint_url, storage_options)
        excluded = None
    elif location.protocol == "file":
        entries = _iter_local(Path(location.path), Path(excluded.path) if excluded else None)
    elif location.protocol == "s3":
        entries = _iter_s3(location, endpoint_url, storage_options)
    else:
        entries = _iter_fsspec(location, endpoint_url, storage_options)
    excluded_prefix = excluded.uri.rstrip("/") + "/" if excluded is not None and excluded.protocol != "file" else None
    suffixes = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    page: list[dict] = []
    for entry in entries:
        if suffixes and entry["error"] is None and not entry["uri"].lower().endswith(suffixes):
            continue
        if excluded_prefix and entry["uri"].startswith(excluded_prefix):
            continue
        page.append(entry)
        if len(page) >= page_size:
            yield page
            page = []
    if page:
        yield page


def is_inside(inner: Location, outer: Location) -> bool:
    """True when `inner` is `outer` or lies below it (same store; local paths compared after resolving links)."""
    if inner.protocol != outer.protocol:
        return False
    if inner.protocol == "file":
        inner_path, outer_path = os.path.realpath(inner.path), os.path.realpath(outer.path)
    else:
        inner_path, outer_path = inner.path.rstrip("/"), outer.path.rstrip("/")
    return inner_path == outer_path or inner_path.startswith(outer_path.rstrip("/") + "/")


def local_uri(path: str) -> str:
    """`file://` + path; a name that is not valid UTF-8 is percent-encoded (its bytes, losslessly)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file://" + urllib.parse.quote(os.fsencode(path), safe="/")
    return "file://" + path


def local_path(location: Location) -> str:
    """The file a `file://` location names, undoing `local_uri`'s percent-encoding when that is what exists."""
    if "%" in location.path and not os.path.lexists(location.path):
        decoded = os.fsdecode(urllib.parse.unquote_to_bytes(location.path))
        if os.path.lexists(decoded):
            return decoded
    return location.path


_SPECIAL_FILE_KINDS = (
    (stat_module.S_ISFIFO, "named pipe (FIFO)"),
    (stat_module.S_ISSOCK, "socket"),
    (stat_module.S_ISCHR, "character device"),
    (stat_module.S_ISBLK, "block device"),
)


def special_file_kind(mode: int) -> str | None:
    """What a non-regular file is (`named pipe (FIFO)`, `socket`, ...), or None for a regular file or folder."""
    if stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL_FILE_KINDS if test(mode)), f"special file (mode {oct(mode)})")


def _iter_local(root: Path, excluded: Path | None = None) -> Iterator[dict]:
    """Every file under `root`, depth first in name order, without opening any of them.

    Rules: symbolic links are followed (to files and to folders); a folder reached a
    second time (a link loop, or two links to one folder) is listed once and each
    further link to it gives an error row `symlink_loop`. Pipes, sockets and devices give
    `not_a_regular_file` rows and are never opened; a broken link gives `broken_symlink`;
    a folder that cannot be read gives a `listing_failed` row for the folder.
    `excluded` (the scan's own output) is not entered.
    """
    excluded_id = None
    if excluded is not None:
        try:
            excluded_stat = os.stat(excluded)
            excluded_id = (excluded_stat.st_dev, excluded_stat.st_ino)
        except OSError:
            pass
    root_stat = os.stat(root)
    visited = {(root_stat.st_dev, root_stat.st_ino): str(root)}
    yield from _walk_local(str(root), visited, excluded_id)


def _walk_local(directory: str, visited: dict, excluded_id) -> Iterator[dict]:
    try:
        with os.scandir(directory) as scanner:
            entries = sorted(scanner, key=lambda e: e.name)
    except OSError as error:
        yield listing_entry(local_uri(directory.rstrip("/") + "/"), None, None, None,
                            f"listing_failed: cannot list this folder ({type(error).__name__}: {error.strerror or error}); "
                            "the objects inside it were not scanned. Fix its permissions and scan again.")
        return
    for entry in entries:
        path = entry.path
        try:
            info = os.stat(path)  # follows links
        except OSError as error:
            if entry.is_symlink():
                target = _readlink(path)
                yield listing_entry(local_uri(path), None, None, None,
                                    f"broken_symlink: the link points to {target!r}, which cannot be reached ({error.strerror})")
            elif isinstance(error, FileNotFoundError):  # vanished since the folder was read: the fetch reports it
                yield listing_entry(local_uri(path), None, None, None)
            else:  # too long a path, an I/O error, no permission: reported, never silently dropped
                yield listing_entry(local_uri(path), None, None, None,
                                    f"listing_failed: cannot read this entry ({type(error).__name__}: "
                                    f"{error.strerror or error}); if it is a folder, the objects inside it were not scanned")
            continue
        if stat_module.S_ISDIR(info.st_mode):
            folder_id = (info.st_dev, info.st_ino)
            if folder_id == excluded_id:
                continue
            if folder_id in visited:
                yield listing_entry(local_uri(path.rstrip("/") + "/"), None, None, info.st_mtime,
                                    f"symlink_loop: this link leads to {visited[folder_id]!r}, a folder already listed "
                                    "in this scan; it is not followed again")
                continue
            visited[folder_id] = path
            yield from _walk_local(path, visited, excluded_id)
            continue
        kind = special_file_kind(info.st_mode)
        if kind is not None:
            yield listing_entry(local_uri(path), None, None, info.st_mtime,
                                f"not_a_regular_file: this is a {kind}, not a file with contents; it was not opened")
            continue
        yield listing_entry(local_uri(path), info.st_size, None, info.st_mtime)


def _readlink(path: str) -> str:
    try:
        return os.fsdecode(os.fsencode(os.readlink(path))).encode("utf-8", "backslashreplace").decode("utf-8")
    except OSError:
        return "?"


def _iter_s3(location: Location, endpoint_url, storage_options) -> Iterator[dict]:
    from fsspec.asyn import sync

    fs = filesystem_for("s3", endpoint_url, storage_options_key(storage_options))
    bucket, _, prefix = location.path.partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    pages = fs._iterdir(bucket, delimiter="", prefix=prefix)
    while True:
        try:
            info = sync(fs.loop, pages.__anext__)
        except StopAsyncIteration:
            return
        key = info["Key"] if "Key" in info else info["name"].split("/", 1)[1]
        if info.get("type") == "directory" or key.endswith("/"):
            continue
        name = info.get("name") or f"{bucket}/{key}"
        yield listing_entry(f"s3://{name}", info.get("size", info.get("Size")), info.get("ETag"), info.get("LastModified"))


def _iter_fsspec(location: Location, endpoint_url, storage_options) -> Iterator[dict]:
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_key(storage_options))
    for _directory, _subdirectories, files in fs.walk(location.path, detail=True):
        for name in sorted(files):
            info = files[name]
            if info.get("type") != "file":
                continue
            etag = info.get("etag") or info.get("md5Hash") or info.get("ETag")
            mtime = info.get("updated") or info.get("mtime") or info.get("LastModified")
            yield listing_entry(f"{location.protocol}://{info['name']}", info.get("size"), etag, mtime)


def _iter_manifest(location: Location, endpoint_url, storage_options) -> Iterator[dict]:
    """URIs from a manifest: Parquet with a `uri` column (or the first string column), or text lines.

    Each URI is listed once (the first time it appears). A line forgescan cannot read
    (another scheme such as https://, bytes that are not UTF-8) becomes an error row.
    """
    seen: set[bytes] = set()  # 16-byte digests: a manifest of 10 million URIs costs ~1 GiB at most
    for value in _iter_manifest_values(location, endpoint_url, storage_options):
        entry = _manifest_entry(value)
        digest = hashlib.blake2b(entry["uri"].encode("utf-8", "surrogateescape"), digest_size=16).digest()
        if digest in seen:
            continue
        seen.add(digest)
        yield entry


def _iter_manifest_values(location: Location, endpoint_url, storage_options) -> Iterator[str]:
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_key(storage_options))
    if location.path.lower().endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with fs.open(location.path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            column = "uri" if "uri" in names else next(
                (f.name for f in parquet.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)), None
            )
            if column is None:
                raise StorageError(f"Manifest {location.uri} has no `uri` (or other string) column; columns: {names}")
            for batch in parquet.iter_batches(columns=[column], batch_size=4096):
                for value in batch.column(0).to_pylist():
                    if value is not None and str(value).strip():
                        yield str(value).strip()
        return
    with fs.open(location.path, "rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "surrogateescape").strip()
            if line and not line.startswith("#"):
                yield line.split(",")[0].strip() if location.path.endswith(".csv") else line


def _manifest_entry(value: str) -> dict:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return listing_entry(shown, None, None, None,
                             "bad_manifest_line: this manifest line is not valid UTF-8; write the URI in UTF-8 "
                             "(percent-encode other bytes)")
    try:
        location = parse_location(value)
    except StorageError:
        scheme = value.split("://", 1)[0]
        return listing_entry(value, None, None, None,
                             f"unsupported_scheme: forgescan reads s3://, gs://, file:// and local paths, not {scheme}://; "
                             "copy the object to one of those stores or drop the line")
    return listing_entry(location.uri, None, None, None)


def read_object(uri: str, endpoint_url: str | None, storage_options_json: str,
                max_bytes: int | None = None) -> tuple[bytes, dict]:
    """The object's bytes plus identity facts the listing may lack (size, etag, mtime).

    Raises NotARegularFile for pipes, sockets and devices (checked on the opened handle,
    which a pipe cannot block: it is opened non-blocking) and ObjectTooLarge for objects
    over `max_bytes`, before their bytes are read.
    """
    location = parse_location(uri)
    if location.protocol == "file":
        descriptor = os.open(local_path(location), os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb", closefd=True) as handle:
            stat = os.fstat(descriptor)
            kind = special_file_kind(stat.st_mode)
            if kind is not None:  # never read a pipe (it blocks) or a device (it never ends)
                raise NotARegularFile(f"this is a {kind}, not a file with contents; it was not read")
            _check_size(stat.st_size, max_bytes)
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
            _check_size(len(data), max_bytes)  # it grew since the stat
        return data, {"size_bytes": len(data), "mtime": listing_entry(uri, 0, None, stat.st_mtime)["mtime"]}
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
    if max_bytes is not None:
        _check_size(fs.info(location.path).get("size"), max_bytes)
    data = fs.cat_file(location.path)
    _check_size(len(data), max_bytes)
    return data, {"size_bytes": len(data)}


class ObjectTooLarge(ValueError):
    """An object over --max-bytes: reported as a `too_large` row, its bytes never read."""


def _check_size(size: int | None, max_bytes: int | None) -> None:
    if max_bytes is not None and size is not None and size > max_bytes:
        raise ObjectTooLarge(f"the object has {int(size):,} bytes, over the limit of {max_bytes:,} "
                             "(raise --max-bytes to scan it)")


def object_identity(uri: str, endpoint_url: str | None, storage_options_json: str) -> dict:
    """size / etag / mtime for an object named by a manifest (which only gives URIs)."""
    location = parse_location(uri)
    if location.protocol == "file":
        stat = os.stat(local_path(location))
        facts = listing_entry(uri, stat.st_size, None, stat.st_mtime)
    else:
        fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
        info = fs.info(location.path)
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        mtime = info.get("LastModified") or info.get("updated") or info.get("mtime")
        facts = listing_entry(uri, info.get("size"), etag, mtime)
    facts.pop("error")
    return facts


_USERINFO = re.compile(r"(?<=://)[^/@\s'\"]+@")
_SECRET_QUERY = re.compile(r"(?i)\b(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|token|"
                           r"access_token|AWSAccessKeyId)=[^&\s'\"]+")


def strip_credentials(text: str | None) -> str | None:
    """`text` with `user:password@` in URLs and signature/token query values replaced by `***`."""
    if not text:
        return text
    return _SECRET_QUERY.sub(r"\1=***", _USERINFO.sub("***@", str(text)))


class CredentialFilter(logging.Filter):
    """Strips credentials from every record of the logger it is attached to (messages and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = strip_credentials(str(record.msg))
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(strip_credentials(a) if isinstance(a, str) else a for a in args)
        return True


logging.getLogger("forgescan").addFilter(CredentialFilter())
