"""The per-batch steps of a scan: fetch and decode, run the models, assemble output rows.

Stateless steps are plain functions (Ray runs them as tasks); the model step is
a callable class so each actor loads its checkpoints once. No step raises on
bad input: a failure becomes an `error` row that carries the reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

import numpy as np
import pyarrow as pa

from forensics.decode import ImageDecodeError, decode_image
from forensics.masks import summarise_written_masks
from forensics.perceptual_hash import PDQ_INPUT_SPEC, pdq_hash
from forensics.provenance import Provenance, read_provenance
from forensics.model_card import NATIVE_CROPS
from forensics.verdict import ERROR, decide_verdict
from pipeline import schema
from pipeline.storage import NotARegularFile, ObjectTooLarge, object_identity, read_object

logger = logging.getLogger("forgescan")

MASK_PROBABILITIES = "mask_probabilities"
INFERENCE_DEVICE = schema.INFERENCE_DEVICE


CLASSIFIER_VIEW = "classifier_view"  # (crops, h, w, 3) or (h, w, 3) uint8 per image
SEGMENTER_VIEW = "segmenter_view"  # the image the segmenter analyses: native (variable size) or resized
PROVENANCE_JSON = "provenance_json"  # forensics.provenance.Provenance as JSON (a struct would not survive numpy batches)


def describe_read_error(error: BaseException) -> str:
    if isinstance(error, NotARegularFile):
        return f"not_a_regular_file: {error}"
    if isinstance(error, ObjectTooLarge):
        return f"too_large: {error}"
    if isinstance(error, FileNotFoundError):
        return f"not_found: the object vanished between listing and reading ({error})"
    if isinstance(error, PermissionError):
        return f"permission_denied: {error}"
    return f"read_failed: {type(error).__name__}: {error}"


def fetch_and_decode(
    batch: dict[str, np.ndarray],
    classifier_card: dict,
    segmenter_card: dict,
    max_pixels: int,
    endpoint_url: str | None,
    storage_options_json: str,
    max_bytes: int | None,
    min_side: int,
) -> dict[str, np.ndarray]:
    """Read each object, hash it, decode it, cut what each model sees; failures become error rows.

    Raw bytes never leave this step. What travels on is each model's view
    (forensics.tiling): the classifier's crops, and the segmenter's image at
    native resolution (capped by the card's max_tiles) or its thumbnail.
    """
    from forensics.model_card import ModelCard

    classifier, segmenter = ModelCard.from_dict(classifier_card), ModelCard.from_dict(segmenter_card)
    uris = batch[schema.URI]
    count = len(uris)
    out: dict[str, list] = {name: [] for name in (
        schema.URI, schema.SIZE_BYTES, schema.ETAG, schema.MTIME, schema.SHA256, schema.FORMAT,
        schema.WIDTH, schema.HEIGHT, schema.STATUS, schema.ERROR, schema.ANALYSIS_SCALE,
        PROVENANCE_JSON, schema.PDQ_HASH, schema.PDQ_QUALITY)}
    classifier_views = np.zeros((count, *classifier_view_shape(classifier)), dtype=np.uint8)
    segmenter_views = np.empty(count, dtype=object)
    for index in range(count):
        uri = str(uris[index])
        identity = {
            schema.SIZE_BYTES: _maybe(batch[schema.SIZE_BYTES][index]),
            schema.ETAG: _maybe(batch[schema.ETAG][index]),
            schema.MTIME: _maybe(batch[schema.MTIME][index]),
        }
        facts = {schema.SHA256: None, schema.FORMAT: None, schema.WIDTH: None, schema.HEIGHT: None, schema.ANALYSIS_SCALE: None,
                 PROVENANCE_JSON: None, schema.PDQ_HASH: None, schema.PDQ_QUALITY: None}
        status, error = schema.STATUS_OK, None
        segmenter_views[index] = np.zeros((1, 1, 3), dtype=np.uint8)
        listing_error = _text(batch[schema.ERROR][index]) if schema.ERROR in batch else None
        if listing_error is not None:  # the listing already knows it cannot be read: never open it
            out[schema.URI].append(uri)
            for key, value in {**identity, **facts}.items():
                out[key].append(value)
            out[schema.STATUS].append(schema.STATUS_ERROR)
            out[schema.ERROR].append(listing_error)
            continue
        try:
            if identity[schema.ETAG] is None and identity[schema.MTIME] is None and not uri.startswith("file://"):
                identity.update({k: v for k, v in object_identity(uri, endpoint_url, storage_options_json).items() if k != "uri"})
            if max_bytes is not None and identity[schema.SIZE_BYTES] is not None and identity[schema.SIZE_BYTES] > max_bytes:
                raise ObjectTooLarge(f"the listing gives {int(identity[schema.SIZE_BYTES]):,} bytes, over the limit of "
                                     f"{max_bytes:,} (raise --max-bytes to scan it)")
            data, read_facts = read_object(uri, endpoint_url, storage_options_json, max_bytes=max_bytes)
            for key, value in read_facts.items():
                if identity.get(key) is None:
                    identity[key] = value
            facts[schema.SHA256] = hashlib.sha256(data).hexdigest()
            image_facts, classifier_views[index], segmenter_views[index] = decode_for_models(data, classifier, segmenter, max_pixels)
            del data
            facts.update(image_facts)
            width, height = facts[schema.WIDTH], facts[schema.HEIGHT]
            if min(width, height) < min_side:
                raise ImageDecodeError("too_small", f"{width}x{height} pixels: the models cannot judge an "
                                       f"image under {min_side} px a side (--min-side); no verdict is given")
        except ImageDecodeError as decode_error:
            status, error = schema.STATUS_ERROR, str(decode_error)
        except Exception as read_error:  # storage failures of one object must not stop the scan
            status, error = schema.STATUS_ERROR, describe_read_error(read_error)
        out[schema.URI].append(uri)
        for key, value in {**identity, **facts}.items():
            out[key].append(value)
        out[schema.STATUS].append(status)
        out[schema.ERROR].append(error)
    result = {key: np.array(values, dtype=object) for key, values in out.items()}
    result[CLASSIFIER_VIEW] = classifier_views
    result[SEGMENTER_VIEW] = segmenter_views
    return result


def classifier_view_shape(classifier) -> tuple[int, ...]:
    """The shape of one image's classifier view: (crops, h, w, 3) for native crops, else (h, w, 3)."""
    if classifier.resize_mode == NATIVE_CROPS:
        return (classifier.crops, *classifier.input_size, 3)
    return (*classifier.input_size, 3)


def decode_for_models(data: bytes, classifier, segmenter, max_pixels: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Decode one image's bytes into its row facts and what each model sees; raises ImageDecodeError.

    The one decode path of a scan (fetch_and_decode) and of the HTTP endpoint (pipeline.serving).
    Returns (row facts: format, size, analysis scale, provenance, PDQ hash; classifier view; segmenter view).
    """
    from forensics.tiling import classifier_view, segmenter_view

    specs = list(dict.fromkeys([classifier.input_spec, segmenter.input_spec, PDQ_INPUT_SPEC]))
    decoded = decode_image(data, specs, max_pixels=max_pixels)
    segmenter_input, scale = segmenter_view(segmenter, decoded.inputs[segmenter.input_spec])
    perceptual = pdq_hash(decoded.inputs[PDQ_INPUT_SPEC])
    facts = {schema.FORMAT: decoded.format, schema.WIDTH: decoded.width, schema.HEIGHT: decoded.height,
             schema.ANALYSIS_SCALE: scale, PROVENANCE_JSON: json.dumps(read_provenance(data, decoded.format).to_row()),
             schema.PDQ_HASH: perceptual.hex, schema.PDQ_QUALITY: perceptual.quality}
    return facts, classifier_view(classifier, decoded.inputs[classifier.input_spec]), segmenter_input


def _text(value) -> str | None:
    """Ray may turn an all-null string column into float NaN; map that back to None."""
    value = _maybe(value)
    return None if value is None else str(value)


def _float(value) -> float | None:
    value = _maybe(value)
    return None if value is None else float(value)


def _integer(value) -> int | None:
    value = _maybe(value)
    return None if value is None else int(value)


def _maybe(value):
    if value is None:
        return None
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return None
    return value


class DetectForgeries:
    """Model actor: loads the classifier and segmenter once, scores batches of decoded images.

    Both models share one actor: they consume the same decoded pixels, so one
    transfer of the batch feeds both, and they fit on one GPU together.
    """

    def __init__(self, classifier_card: dict, classifier_weights, segmenter_card: dict, segmenter_weights, analysis: str):
        import ray
        import torch

        from forensics.inference import ClassifierPredictor, SegmenterPredictor, pick_device  # torch: actors only
        from forensics.model_card import ModelCard

        device = pick_device()
        self.device_label = _describe_device(device)
        self.analysis = analysis
        if device.type == "cpu":
            torch.set_num_threads(max(1, int(_assigned_cpus())))
        weights = [w for w in (classifier_weights, segmenter_weights)]
        weights = [ray.get(w) if isinstance(w, ray.ObjectRef) else w for w in weights]
        self.classifier = ClassifierPredictor.from_weights(weights[0], ModelCard.from_dict(classifier_card), device)
        self.segmenter = SegmenterPredictor.from_weights(weights[1], ModelCard.from_dict(segmenter_card), device)
        logger.info("forgescan model actor ready on %s", self.device_label)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores every ok row: P(AI) from the classifier's views, and from the segmenter's stitched
        probability map its calibrated image-level score; the map travels on (float16) for the masks."""
        ok = batch[schema.STATUS] == schema.STATUS_OK
        count = len(ok)
        ai_scores = np.full(count, np.nan, dtype=np.float32)
        manipulation_scores = np.full(count, np.nan, dtype=np.float32)
        probabilities = np.empty(count, dtype=object)
        for index in range(count):
            probabilities[index] = np.zeros((1, 1), dtype=np.float16)
        if ok.any():
            ai_scores[ok] = self.classifier.predict(batch[CLASSIFIER_VIEW][ok])
            rows = np.flatnonzero(ok)
            views = (np.asarray(batch[SEGMENTER_VIEW][row], dtype=np.uint8) for row in rows)
            for row, probability_map in zip(rows, self.segmenter.probability_maps(views)):
                manipulation_scores[row] = self.segmenter.image_score(probability_map)
                probabilities[row] = probability_map.astype(np.float16)
        result = {k: v for k, v in batch.items() if k not in (CLASSIFIER_VIEW, SEGMENTER_VIEW)}
        result[schema.AI_SCORE] = ai_scores
        result[schema.MANIPULATION_SCORE] = manipulation_scores
        result[MASK_PROBABILITIES] = probabilities
        result[INFERENCE_DEVICE] = np.array([self.device_label] * count, dtype=object)
        result[schema.ANALYSIS] = np.array([self.analysis] * count, dtype=object)
        return result


def _assigned_cpus() -> float:
    try:
        import ray

        return ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    except Exception:
        return 1.0


def _describe_device(device) -> str:
    """`cuda:0 (<name>)`, `cpu`, or `cpu (assigned GPU [0], CUDA unavailable)` for an honest audit trail."""
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    try:
        import ray

        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:
        gpu_ids = []
    if gpu_ids:
        logger.warning("model actor was assigned GPU %s but CUDA is not available: running on CPU", gpu_ids)
        return f"cpu (assigned GPU {list(gpu_ids)}, CUDA unavailable)"
    return "cpu"


def row_settings(classifier, segmenter) -> dict:
    """assemble_rows' model facts from the two cards: versions, thresholds, class names (scan and endpoint)."""
    return {
        "classifier_version": classifier.version,
        "segmenter_version": segmenter.version,
        "ai_threshold": classifier.threshold("ai_generated"),
        "pixel_threshold": segmenter.threshold("pixel"),
        "manipulation_threshold": segmenter.threshold("manipulated"),
        "class_names": segmenter.class_names,
    }


def assemble_rows(
    batch: dict[str, np.ndarray],
    scan_id: str,
    classifier_version: str,
    segmenter_version: str,
    ai_threshold: float,
    pixel_threshold: float,
    manipulation_threshold: float,
    class_names: tuple[str, ...] = (),
) -> pa.Table:
    """Upsample masks to the original resolution, RLE-encode, decide verdicts; returns output-schema rows.

    A multi-class segmenter's (C, h, w) class probabilities (`class_names` by id) also give one mask per
    manipulation type and the dominant type; `mask_rle` stays the union of the manipulated classes.
    Only an image whose manipulation score reaches `manipulation_threshold` gets a mask (forensics.masks.gets_mask);
    below it the mask is empty, with no class masks and no type.
    """
    count = len(batch[schema.URI])
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for index in range(count):
        ok = batch[schema.STATUS][index] == schema.STATUS_OK
        row = {
            schema.SCAN_ID: scan_id,
            schema.URI: _text(batch[schema.URI][index]),
            schema.SIZE_BYTES: _integer(batch[schema.SIZE_BYTES][index]),
            schema.ETAG: _text(batch[schema.ETAG][index]),
            schema.MTIME: _text(batch[schema.MTIME][index]),
            schema.SHA256: _text(batch[schema.SHA256][index]),
            schema.FORMAT: _text(batch[schema.FORMAT][index]),
            schema.WIDTH: _integer(batch[schema.WIDTH][index]),
            schema.HEIGHT: _integer(batch[schema.HEIGHT][index]),
            schema.STATUS: _text(batch[schema.STATUS][index]),
            schema.ERROR: _text(batch[schema.ERROR][index]),
            schema.CLASSIFIER_VERSION: classifier_version,
            schema.SEGMENTER_VERSION: segmenter_version,
            schema.SCANNED_AT: now,
            schema.INFERENCE_DEVICE: batch[INFERENCE_DEVICE][index],
            schema.ANALYSIS: _text(batch[schema.ANALYSIS][index]),
            schema.ANALYSIS_SCALE: _float(batch[schema.ANALYSIS_SCALE][index]),
            schema.PDQ_HASH: _text(batch[schema.PDQ_HASH][index]),
            schema.PDQ_QUALITY: _integer(batch[schema.PDQ_QUALITY][index]),
        }
        provenance_json = _text(batch[PROVENANCE_JSON][index])
        provenance = Provenance(**json.loads(provenance_json)) if provenance_json else None
        row[schema.PROVENANCE] = provenance.to_row() if provenance else None
        if ok:
            try:
                probabilities = batch[MASK_PROBABILITIES][index].astype(np.float32)
                height, width = int(batch[schema.HEIGHT][index]), int(batch[schema.WIDTH][index])
                ai_score = float(batch[schema.AI_SCORE][index])
                manipulation = float(batch[schema.MANIPULATION_SCORE][index])
                mask, class_masks, dominant_type = summarise_written_masks(
                    probabilities, height, width, pixel_threshold, tuple(class_names), manipulation, manipulation_threshold)
                verdict = decide_verdict(ai_score, manipulation, ai_threshold, manipulation_threshold,
                                         declared_ai=provenance.declared_ai if provenance else False)
                reasons = verdict.reasons + (provenance.reasons if provenance else [])
                row.update({
                    schema.VERDICT: verdict.label,
                    schema.REASONS: reasons,
                    schema.AI_SCORE: ai_score,
                    schema.MANIPULATION_SCORE: manipulation,
                    schema.CONFIDENCE: verdict.confidence,
                    schema.MASK_RLE: mask.rle.to_row(),
                    schema.MASK_AREA: mask.area_fraction,
                    schema.MASK_BBOX: list(mask.bbox),
                    schema.MASK_CLASSES: None if class_masks is None else [entry.to_row() for entry in class_masks],
                    schema.MANIPULATION_TYPE: dominant_type,
                })
            except Exception as error:  # e.g. out of memory on a huge mask: one error row, not a dead scan
                row.update({schema.STATUS: schema.STATUS_ERROR, schema.ERROR: f"postprocess_failed: {type(error).__name__}: {error}"})
                ok = False
        if not ok:
            row.update({schema.VERDICT: ERROR, schema.AI_SCORE: None, schema.MANIPULATION_SCORE: None,
                        schema.CONFIDENCE: None, schema.MASK_RLE: None, schema.MASK_AREA: None, schema.MASK_BBOX: None,
                        schema.MASK_CLASSES: None, schema.MANIPULATION_TYPE: None,
                        schema.REASONS: [f"error: {row[schema.ERROR]}"]})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.OUTPUT_SCHEMA)


# Sorted hash arrays of the running scan's plan, fetched once per worker process (by object ref), not per block.
_PROBES: dict[str, np.ndarray] = {}


def _probe(ref) -> np.ndarray:
    import ray

    key = ref.hex()
    if key not in _PROBES:
        if len(_PROBES) >= 6:  # another scan's arrays: let them go
            _PROBES.clear()
        _PROBES[key] = ray.get(ref)
    return _PROBES[key]


def skip_done_objects(
    batch: pa.Table,
    skip_uris_ref,
    skip_identities_ref,
    skip_permanent_errors_ref,
    counter,
    endpoint_url: str | None,
    storage_options_json: str,
) -> pa.Table:
    """The skip stage: `drop_known_objects` with the plan's hash arrays, fetched once per worker process."""
    skip_uris, skip_identities, skip_permanent = (_probe(r) for r in (skip_uris_ref, skip_identities_ref,
                                                                     skip_permanent_errors_ref))
    batch, counts = drop_known_objects(batch, skip_uris, skip_identities, skip_permanent, endpoint_url,
                                       storage_options_json)
    if counter is not None:
        import ray

        ray.get(counter.add.remote(**counts))  # tallied before the block moves on: when the dataset is done, so is the count
    return batch


def drop_known_objects(batch: pa.Table, skip_uris: np.ndarray, skip_identities: np.ndarray,
                       skip_permanent: np.ndarray, endpoint_url: str | None = None,
                       storage_options_json: str = "") -> tuple[pa.Table, dict[str, int]]:
    """Drop objects already committed in this scan (resume), unchanged since their latest `ok` row, or unchanged
    since a permanent error (pipeline.latest_state.PERMANENT_ERROR_KINDS) in an earlier scan (incremental).

    Each set is a sorted array of 64-bit hashes probed by binary search: the cost per
    object does not grow with the number of objects earlier scans saw. Manifest
    entries carry only a URI; their size/ETag are looked up here so that unchanged
    objects are still recognised. Returns the remaining rows and what was dropped.
    """
    from pipeline.latest_state import contains, identity_hashes, string_hashes

    listed = batch.num_rows
    if len(skip_uris):
        batch = batch.filter(pa.array(~contains(skip_uris, string_hashes(batch.column(schema.URI)))))
    resumed = listed - batch.num_rows
    permanent_errors = 0
    if (len(skip_identities) or len(skip_permanent)) and batch.num_rows:
        import pyarrow.compute as pc

        missing = pc.and_(pc.is_null(batch.column(schema.ETAG)), pc.is_null(batch.column(schema.MTIME)))
        if pc.any(missing).as_py():
            rows = batch.to_pylist()
            for row in rows:
                if row[schema.ETAG] is None and row[schema.MTIME] is None:
                    try:
                        row.update({k: v for k, v in object_identity(row[schema.URI], endpoint_url, storage_options_json).items() if k != schema.URI})
                    except Exception:
                        pass  # the fetch step will report the object as an error row
            batch = pa.Table.from_pylist(rows, schema=batch.schema)
        hashes = identity_hashes(batch.column(schema.URI), batch.column(schema.SIZE_BYTES), batch.column(schema.ETAG),
                                 batch.column(schema.MTIME))
        known_error = contains(skip_permanent, hashes)
        permanent_errors = int(known_error.sum())
        batch = batch.filter(pa.array(~(contains(skip_identities, hashes) | known_error)))
    unchanged = listed - resumed - batch.num_rows
    return batch, {"listed": listed, "already_committed": resumed, "unchanged": unchanged,
                   "unchanged_permanent_errors": permanent_errors}


class ListingCounter:
    """A tiny actor that tallies what the listing produced and what was skipped."""

    def __init__(self):
        self.counts = {"listed": 0, "already_committed": 0, "unchanged": 0, "unchanged_permanent_errors": 0}

    def add(self, **increments: int) -> None:
        for key, value in increments.items():
            self.counts[key] += value

    def get(self) -> dict:
        return dict(self.counts)
