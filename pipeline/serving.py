"""The HTTP endpoint: one uploaded image in, one scan row out, from the scan's own decode, models and verdict rules.

A Ray Serve application with a FastAPI ingress. Each replica loads the
classifier and segmenter once (in the background, so `/health` answers 503
while they load), decodes an upload with `pipeline.stages.decode_for_models`,
and scores uploads in dynamic batches (`@serve.batch`) with the scan's
`DetectForgeries` and `assemble_rows`: a response is the row a scan of the
same file would write. Bad uploads are answered 4xx before they reach a batch,
so they never disturb requests in flight.
"""

import asyncio
import datetime as dt
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.datastructures import UploadFile

from forensics import forgescan_version
from forensics.decode import DEFAULT_MAX_PIXELS, ImageDecodeError
from pipeline import schema
from pipeline.config import ANALYSIS_MODES, NATIVE, TRIAGE
from pipeline.stages import (
    CLASSIFIER_VIEW, SEGMENTER_VIEW, DetectForgeries, assemble_rows, decode_for_models, row_settings,
)

logger = logging.getLogger("forgescan")

SERVICE_NAME = "forgescan"
UPLOAD_FIELD = "file"
# Columns that describe an archive object, not an upload: left out of the response.
STORAGE_ONLY_COLUMNS = (schema.SCAN_ID, schema.URI, schema.ETAG, schema.MTIME)
# HTTP status of each decode error kind (forensics.decode.ImageDecodeError.kind).
DECODE_ERROR_STATUS = {
    "empty": 400,
    "not_an_image": 415,
    "unsupported": 415,
    "truncated": 422,
    "corrupt": 422,
    "too_large": 413,
}


@dataclass(frozen=True)
class ServeConfig:
    """Everything the endpoint needs to know; `forgescan serve` and the Serve config read their defaults here.

    Attributes:
        classifier_checkpoint / segmenter_checkpoint: safetensors files (card beside them), read by each
            replica on its own node; None = the bundled checkpoints.
        host, port: where `forgescan serve` listens.
        analysis: `native` or `triage`, as for a scan.
        max_upload_bytes: larger uploads are refused with 413 before they are decoded.
        max_pixels: larger images are refused with 413 (`too_large`), as a scan makes them error rows.
        max_batch_size, batch_wait_timeout_s: Serve's dynamic batching of uploads into one model call.
        replicas: fixed replica count, or (min, max) for Serve's autoscaling.
        cpus_per_replica, gpus_per_replica: Ray resources of each replica (GPU when it has one).
    """

    classifier_checkpoint: str | None = None
    segmenter_checkpoint: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    analysis: str = NATIVE
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.02
    replicas: int | tuple[int, int] = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def __post_init__(self) -> None:
        # Each message names the setting as a Serve config's `args` spells it and as `forgescan serve` does.
        if self.analysis not in ANALYSIS_MODES:
            raise ValueError(f"analysis (--analysis) must be one of {list(ANALYSIS_MODES)}, got `{self.analysis}`")
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes (--max-upload-bytes) must be at least 1, got {self.max_upload_bytes}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size (--max-batch-size) must be at least 1, got {self.max_batch_size}")
        low, high = self.replicas if isinstance(self.replicas, tuple) else (self.replicas, self.replicas)
        if not 1 <= low <= high:
            shown = f"{low}-{high}" if isinstance(self.replicas, tuple) else self.replicas
            raise ValueError(f"replicas (--replicas) must be N >= 1 or MIN-MAX with 1 <= MIN <= MAX, got {shown}")

    @classmethod
    def from_dict(cls, settings: dict) -> "ServeConfig":  # noqa: UP037
        """From a Serve config's `args` (unknown keys are an error that names them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown forgescan serve settings {unknown}; known: {sorted(known)}")
        settings = dict(settings)
        if isinstance(settings.get("replicas"), list):
            settings["replicas"] = tuple(settings["replicas"])
        return cls(**settings)


def error_response(status: int, kind: str, message: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": kind, "message": message, **extra})


@dataclass
class DecodedUpload:
    """One upload after decoding: its row facts and what each model sees."""

    filename: str
    size_bytes: int
    sha256: str
    facts: dict
    classifier_view: np.ndarray
    segmenter_view: np.ndarray


class LoadedModels:
    """The replica's models and the card facts the rows need, loaded once."""

    def __init__(self, config: ServeConfig):
        from forensics.model_card import CLASSIFIER, SEGMENTER
        from pipeline.scan import load_model_payload

        classifier_weights, self.classifier = load_model_payload(config.classifier_checkpoint, CLASSIFIER)
        segmenter_weights, self.segmenter = load_model_payload(config.segmenter_checkpoint, SEGMENTER)
        if config.analysis == TRIAGE:
            self.classifier, self.segmenter = self.classifier.for_triage(), self.segmenter.for_triage()
        self.detector = DetectForgeries(self.classifier.to_dict(), classifier_weights, self.segmenter.to_dict(),
                                        segmenter_weights, config.analysis)

    def score(self, uploads: list[DecodedUpload]) -> list[dict]:
        """Scan rows for decoded uploads: the scan's model step and row assembly, one batch."""
        count = len(uploads)
        text = lambda values: np.array(values, dtype=object)  # noqa: E731
        batch = {
            schema.URI: text([f"upload:{u.filename}" for u in uploads]),
            schema.SIZE_BYTES: text([u.size_bytes for u in uploads]),
            schema.ETAG: text([None] * count),
            schema.MTIME: text([None] * count),
            schema.SHA256: text([u.sha256 for u in uploads]),
            schema.STATUS: text([schema.STATUS_OK] * count),
            schema.ERROR: text([None] * count),
            CLASSIFIER_VIEW: np.stack([u.classifier_view for u in uploads]),
        }
        for key in uploads[0].facts:  # format, size, analysis scale, provenance, PDQ hash: decode_for_models' facts
            batch[key] = text([u.facts[key] for u in uploads])
        segmenter_views = np.empty(count, dtype=object)
        for index, upload in enumerate(uploads):
            segmenter_views[index] = upload.segmenter_view
        batch[SEGMENTER_VIEW] = segmenter_views
        table = assemble_rows(self.detector(batch), scan_id="http", **row_settings(self.classifier, self.segmenter))
        rows = []
        for upload, row in zip(uploads, table.to_pylist()):
            response = {"filename": upload.filename}
            for key, value in row.items():
                if key in STORAGE_ONLY_COLUMNS:
                    continue
                response[key] = value.isoformat() if isinstance(value, dt.datetime) else value
            rows.append(response)
        return rows


app = FastAPI(title="forgescan", description="AI-generated and manipulated image detection, one image per request.")


@serve.deployment(name="forgescan")
@serve.ingress(app)
class ForgeryDetector:
    """A Serve replica: the FastAPI routes over one set of loaded models."""

    def __init__(self, settings: dict):
        self.config = ServeConfig.from_dict(settings)
        self.models: LoadedModels | None = None
        self.load_error: str | None = None
        self.model_calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgescan-models")
        self.score_batch.set_max_batch_size(self.config.max_batch_size)
        self.score_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        threading.Thread(target=self._load_models, name="forgescan-load", daemon=True).start()

    def _load_models(self) -> None:
        try:
            self.models = LoadedModels(self.config)
            logger.info("forgescan endpoint ready on %s", self.models.detector.device_label)
        except Exception as error:  # reported by /health and /predict; a restart would fail the same way
            logger.exception("forgescan endpoint could not load its models")
            self.load_error = f"{type(error).__name__}: {error}"

    @app.get("/")
    def describe(self) -> dict:
        models = None
        if self.models is not None:
            models = {
                "classifier": {"version": self.models.classifier.version, "trained": self.models.classifier.trained},
                "segmenter": {"version": self.models.segmenter.version, "trained": self.models.segmenter.trained},
                "device": self.models.detector.device_label,
            }
        return {
            "service": SERVICE_NAME,
            "version": forgescan_version() or "unknown",
            "ready": self.models is not None,
            "models": models,
            "analysis": self.config.analysis,
            "limits": {"max_upload_bytes": self.config.max_upload_bytes, "max_pixels": self.config.max_pixels},
            "predict": f"POST /predict with the image as multipart form field `{UPLOAD_FIELD}`; ?mask=false skips the mask",
        }

    @app.get("/health")
    def health(self):
        if self.models is not None:
            return {"status": "ok"}
        if self.load_error is not None:
            return JSONResponse(status_code=503, content={"status": "failed", "error": self.load_error})
        return JSONResponse(status_code=503, content={"status": "loading"})

    @app.post("/predict")
    async def predict(self, request: Request, mask: bool = True):
        limit = self.config.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
            return error_response(413, "upload_too_large", f"the request body is {int(declared):,} bytes; the upload limit is {limit:,} bytes")
        try:
            form = await request.form(max_files=1)
        except Exception as error:  # malformed multipart body, too many files, ...
            return error_response(400, "bad_form", f"the body is not a readable multipart form: {getattr(error, 'detail', error)}")
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, UploadFile):
            return error_response(400, "missing_file", f"send the image as multipart form field `{UPLOAD_FIELD}` "
                                                       f"(e.g. curl -F {UPLOAD_FIELD}=@photo.jpg)")
        filename = upload.filename or UPLOAD_FIELD
        data = await upload.read(limit + 1)
        await form.close()
        if len(data) > limit:
            return error_response(413, "upload_too_large", f"`{filename}` is over the upload limit of {limit:,} bytes", filename=filename)
        if self.models is None:
            return error_response(503, "not_ready", self.load_error or "the models are still loading; retry shortly")
        try:
            decoded = await asyncio.get_running_loop().run_in_executor(None, self._decode, filename, data)
        except ImageDecodeError as error:
            return error_response(DECODE_ERROR_STATUS.get(error.kind, 422), error.kind, f"`{filename}`: {error.message}",
                                  filename=filename)
        row = await self.score_batch(decoded)
        if not mask:
            row.pop(schema.MASK_RLE, None)
        if row[schema.STATUS] != schema.STATUS_OK:  # e.g. post-processing ran out of memory for this image
            return JSONResponse(status_code=422, content={"error": row[schema.ERROR].split(":", 1)[0], "message": row[schema.ERROR], **row})
        return row

    def _decode(self, filename: str, data: bytes) -> DecodedUpload:
        facts, classifier_input, segmenter_input = decode_for_models(
            data, self.models.classifier, self.models.segmenter, self.config.max_pixels)
        return DecodedUpload(filename, len(data), hashlib.sha256(data).hexdigest(), facts, classifier_input, segmenter_input)

    @serve.batch(max_batch_size=ServeConfig.max_batch_size, batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s)  # set per replica in __init__
    async def score_batch(self, uploads: list[DecodedUpload]) -> list[dict]:
        return await asyncio.get_running_loop().run_in_executor(self.model_calls, self.models.score, uploads)


def build_app(config: ServeConfig):
    """The Serve application for `config`: replica count or autoscaling, CPU/GPU per replica."""
    options = {"ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica}}
    if isinstance(config.replicas, tuple):
        low, high = config.replicas
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 2 * config.max_batch_size}
    else:
        options["num_replicas"] = config.replicas
    options["max_ongoing_requests"] = 4 * config.max_batch_size
    return ForgeryDetector.options(**options).bind(asdict(config))


def app_builder(args: dict):
    """Serve config entry point (`import_path: pipeline.serving:app_builder`); `args` are ServeConfig fields."""
    return build_app(ServeConfig.from_dict(args or {}))
