"""The one output schema: column names and Arrow types of every row forgescan writes."""

from __future__ import annotations

import pyarrow as pa

SCAN_ID = "scan_id"
URI = "uri"
SIZE_BYTES = "size_bytes"
ETAG = "etag"
MTIME = "mtime"
SHA256 = "sha256"
FORMAT = "format"
WIDTH = "width"
HEIGHT = "height"
STATUS = "status"
ERROR = "error"
VERDICT = "verdict"
AI_SCORE = "ai_score"
MANIPULATION_SCORE = "manipulation_score"
CONFIDENCE = "confidence"
MASK_RLE = "mask_rle"
MASK_AREA = "mask_area"
MASK_BBOX = "mask_bbox"
CLASSIFIER_VERSION = "classifier_version"
SEGMENTER_VERSION = "segmenter_version"
SCANNED_AT = "scanned_at"
INFERENCE_DEVICE = "inference_device"
ANALYSIS = "analysis"
ANALYSIS_SCALE = "analysis_scale"
MASK_CLASSES = "mask_classes"
MANIPULATION_TYPE = "manipulation_type"
PROVENANCE = "provenance"
REASONS = "reasons"
PDQ_HASH = "pdq_hash"
PDQ_QUALITY = "pdq_quality"
BANK_MATCHES = "bank_matches"

STATUS_OK = "ok"
STATUS_ERROR = "error"

# What the file declares about its origin (forensics.provenance.Provenance); null where the object failed.
PROVENANCE_TYPE = pa.struct([
    pa.field("c2pa_present", pa.bool_()),
    pa.field("c2pa_validation", pa.string()),
    pa.field("c2pa_failures", pa.list_(pa.string())),
    pa.field("c2pa_claim_generator", pa.string()),
    pa.field("c2pa_actions", pa.list_(pa.string())),
    pa.field("c2pa_digital_source_type", pa.string()),
    pa.field("xmp_digital_source_type", pa.string()),
    pa.field("exif_software", pa.string()),
    pa.field("exif_make", pa.string()),
    pa.field("exif_model", pa.string()),
    pa.field("generator_hint", pa.string()),
    pa.field("generation_parameters", pa.string()),
    pa.field("declared_ai", pa.bool_()),
    pa.field("errors", pa.list_(pa.string())),
])
MASK_RLE_TYPE = pa.struct([pa.field("size", pa.list_(pa.int32())), pa.field("counts", pa.string())])
# One entry per manipulation type present in the image (multi-class segmenters; null for binary ones).
MASK_CLASS_TYPE = pa.struct([
    pa.field("class_id", pa.int32()),
    pa.field("name", pa.string()),
    pa.field("mask_rle", MASK_RLE_TYPE),
    pa.field("area", pa.float32()),
])

OUTPUT_SCHEMA = pa.schema(
    [
        pa.field(SCAN_ID, pa.string(), nullable=False),
        pa.field(URI, pa.string(), nullable=False),
        pa.field(SIZE_BYTES, pa.int64()),
        pa.field(ETAG, pa.string()),
        pa.field(MTIME, pa.string()),
        pa.field(SHA256, pa.string()),
        pa.field(FORMAT, pa.string()),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(STATUS, pa.string(), nullable=False),
        pa.field(ERROR, pa.string()),
        pa.field(VERDICT, pa.string(), nullable=False),
        pa.field(AI_SCORE, pa.float32()),
        pa.field(MANIPULATION_SCORE, pa.float32()),
        pa.field(CONFIDENCE, pa.float32()),
        pa.field(MASK_RLE, MASK_RLE_TYPE),
        pa.field(MASK_AREA, pa.float32()),
        pa.field(MASK_BBOX, pa.list_(pa.int32())),
        pa.field(CLASSIFIER_VERSION, pa.string()),
        pa.field(SEGMENTER_VERSION, pa.string()),
        pa.field(SCANNED_AT, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(INFERENCE_DEVICE, pa.string()),  # audit: where the models ran (cpu, cuda:0 (...))
        # Added with native-resolution analysis (nullable: older outputs lack them).
        pa.field(ANALYSIS, pa.string()),  # `native` (crops + tiles at full resolution) or `triage` (thumbnail)
        pa.field(ANALYSIS_SCALE, pa.float32()),  # segmenter's resolution / original; <1 when the tile cap reduced it
        # Added with multi-class segmenters (nullable: older outputs and binary segmenters lack them).
        pa.field(MASK_CLASSES, pa.list_(MASK_CLASS_TYPE)),  # per manipulation type: its own COCO RLE; union = mask_rle
        pa.field(MANIPULATION_TYPE, pa.string()),  # the type covering the largest area of the mask, e.g. `spliced`
        # Added with declared provenance and perceptual hashes (nullable: older outputs lack them).
        pa.field(PROVENANCE, PROVENANCE_TYPE),
        pa.field(REASONS, pa.list_(pa.string())),  # why the row got its verdict, in words
        pa.field(PDQ_HASH, pa.string()),  # PDQ perceptual hash, 256 bits as 64 hex characters
        pa.field(PDQ_QUALITY, pa.int32()),  # PDQ quality 0-100; hashes under 50 are unreliable for matching
        # scan --match-bank: known hashes within PDQ distance 31, closest first; null without a bank
        pa.field(BANK_MATCHES, pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("distance", pa.int32()),
                                                   pa.field("pdq_hash", pa.string())]))),
    ],
    metadata={
        "forgescan.mask_rle": "COCO RLE, column-major, size=[height, width], original resolution",
        "forgescan.mask_orientation": "display orientation: after EXIF rotation, like width and height",
    },
)

OUTPUT_COLUMNS = tuple(OUTPUT_SCHEMA.names)
# What the listing yields per object: the identity carried into every row, also for objects that failed,
# and `error` for objects the listing already knows cannot be read (special files, unreadable folders, ...).
LISTING_SCHEMA = pa.schema([OUTPUT_SCHEMA.field(name) for name in (URI, SIZE_BYTES, ETAG, MTIME, ERROR)])
