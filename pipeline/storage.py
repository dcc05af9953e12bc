"""Object storage: one way to name, open, list and read objects on S3, GCS and local disks.

Listing streams page by page (S3 `ListObjectsV2` pages, one directory at a
time elsewhere), so an archive of any size never sits in memory. Storage
problems a user can fix (missing bucket, rejected credentials, unreachable
endpoint) become one `StorageError` that names the location and the fix.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec

MANIFEST_SUFFIXES = (".parquet", ".txt", ".lst", ".manifest", ".csv")
S3_RETRIES = {"max_attempts": 10, "mode": "adaptive"}  # botocore: backoff with jitter, throttling-aware


class StorageError(RuntimeError):
    """A storage problem the user can fix; the message names the location and the fix."""


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


def storage_options_key(storage_options: dict | None) -> str:
    return json.dumps(storage_options or {}, sort_keys=True)


def describe_storage_error(location: Location, error: BaseException, endpoint_url: str | None = None) -> str:
    """A one-line explanation with the fix, never containing credentials."""
    text = f"{type(error).__name__}: {error}"
    where = location.uri + (f" (endpoint {endpoint_url})" if endpoint_url else "")
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
    if any(k in lowered for k in ("could not connect", "connect timeout", "connection refused", "name or service not known", "endpointconnectionerror")):
        return f"Cannot reach the object store for {where}. Check --endpoint-url / AWS_ENDPOINT_URL and the network."
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


def listing_entry(uri: str, size: int | None, etag: str | None, mtime) -> dict:
    if isinstance(mtime, (int, float)):
        mtime = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).isoformat()
    elif isinstance(mtime, dt.datetime):
        mtime = mtime.astimezone(dt.timezone.utc).isoformat()
    return {
        "uri": uri,
        "size_bytes": None if size is None else int(size),
        "etag": etag.strip('"') if isinstance(etag, str) else None,
        "mtime": None if mtime is None else str(mtime),
    }


def iter_listing(
    source: str,
    endpoint_url: str | None = None,
    storage_options: dict | None = None,
    page_size: int = 1000,
    extensions: tuple[str, ...] = (),
) -> Iterator[list[dict]]:
    """Pages of listing entries (`uri`, `size_bytes`, `etag`, `mtime`) under `source`, streamed."""
    location = parse_location(source)
    if location.path.lower().endswith(MANIFEST_SUFFIXES):
        entries = _iter_manifest(location, endpoint_url, storage_options)
    elif location.protocol == "file":
        entries = _iter_local(Path(location.path))
    elif location.protocol == "s3":
        entries = _iter_s3(location, endpoint_url, storage_options)
    else:
        entries = _iter_fsspec(location, endpoint_url, storage_options)
    suffixes = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    page: list[dict] = []
    for entry in entries:
        if suffixes and not entry["uri"].lower().endswith(suffixes):
            continue
        page.append(entry)
        if len(page) >= page_size:
            yield page
            page = []
    if page:
        yield page


def _iter_local(root: Path) -> Iterator[dict]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:  # vanished between listing and stat: still listed, the fetch reports it
                yield listing_entry("file://" + path, None, None, None)
                continue
            yield listing_entry("file://" + path, stat.st_size, None, stat.st_mtime)


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
    """URIs from a manifest: Parquet with a `uri` column (or the first string column), or text lines."""
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
                    if value:
                        yield _manifest_entry(value)
        return
    with fs.open(location.path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                yield _manifest_entry(line.split(",")[0] if location.path.endswith(".csv") else line)


def _manifest_entry(value: str) -> dict:
    return listing_entry(parse_location(value).uri, None, None, None)


def read_object(uri: str, endpoint_url: str | None, storage_options_json: str) -> tuple[bytes, dict]:
    """The object's bytes plus identity facts the listing may lack (size, etag, mtime)."""
    location = parse_location(uri)
    if location.protocol == "file":
        with open(location.path, "rb") as handle:
            data = handle.read()
        stat = os.stat(location.path)
        return data, {"size_bytes": len(data), "mtime": listing_entry(uri, 0, None, stat.st_mtime)["mtime"]}
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
    data = fs.cat_file(location.path)
    return data, {"size_bytes": len(data)}


def object_identity(uri: str, endpoint_url: str | None, storage_options_json: str) -> dict:
    """size / etag / mtime for an object named by a manifest (which only gives URIs)."""
    location = parse_location(uri)
    if location.protocol == "file":
        stat = os.stat(location.path)
        return listing_entry(uri, stat.st_size, None, stat.st_mtime)
    fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
    info = fs.info(location.path)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    mtime = info.get("LastModified") or info.get("updated") or info.get("mtime")
    return listing_entry(uri, info.get("size"), etag, mtime)
