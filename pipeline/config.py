"""Scan settings: one frozen dataclass, one place for the defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from forensics.decode import DEFAULT_MAX_PIXELS

NATIVE = "native"
TRIAGE = "triage"
ANALYSIS_MODES = (NATIVE, TRIAGE)


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan needs to know.

    Attributes:
        source: `s3://bucket/prefix`, `gs://...`, a local folder, a `file://` URI, or a
            manifest (`.parquet` with a `uri` column, or a text file of URIs, one per line).
        output: destination prefix; rows land in `output/scan_id=<id>/*.parquet`.
        classifier_checkpoint / segmenter_checkpoint: safetensors files; None = bundled default.
        batch_size: images per model call.
        num_model_actors: size of the model actor pool; (min, max) for autoscaling.
        gpus_per_actor: GPUs reserved per model actor; 0 on CPU-only clusters, fractions allowed.
        decode_cpus: CPUs per fetch-and-decode task.
        max_pixels: larger images become `too_large` error rows.
        analysis: `native` (the cards' native-resolution crops and tiles: what the models were
            trained for; cost grows with megapixels) or `triage` (one centre crop and a thumbnail:
            fixed cost per image, for CPU-only first passes; see README, Analysis modes).
        full: ignore earlier scans and process every object.
        rescan_on_model_change: re-process objects last scanned with other model versions.
        scan_id: explicit id; by default an interrupted scan of the same source resumes, else a new id.
        rows_per_file: rows per committed Parquet file; also the unit of work a resume can skip.
    """

    source: str
    output: str
    endpoint_url: str | None = None
    classifier_checkpoint: str | None = None
    segmenter_checkpoint: str | None = None
    batch_size: int = 32
    num_model_actors: int | tuple[int, int] = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    decode_cpus: float = 1.0
    decode_batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    analysis: str = NATIVE
    address: str | None = None
    full: bool = False
    rescan_on_model_change: bool = False
    scan_id: str | None = None
    extensions: tuple[str, ...] = field(default_factory=tuple)
    storage_options: dict = field(default_factory=dict)
    rows_per_file: int = 512
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.analysis not in ANALYSIS_MODES:
            raise ValueError(f"analysis must be one of {list(ANALYSIS_MODES)}, got `{self.analysis}`")
