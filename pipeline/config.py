"""Scan settings: one frozen dataclass, one place for the defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from forensics.decode import DEFAULT_MAX_PIXELS

NATIVE = "native"
TRIAGE = "triage"
ANALYSIS_MODES = (NATIVE, TRIAGE)
AUTO = "auto"
# CPUs the scan's own tasks need beside the model actors: Ray Data's streaming repartition runs as a 1-CPU task;
# the listing and write tasks take a quarter each, and run between its turns.
PIPELINE_TASK_CPUS = 1.0
LIGHT_TASK_CPUS = 0.25  # the listing, skip, row-assembly and write tasks' ask


class ConfigError(ValueError):
    """A setting no scan can run with; the message names the flag, the value and what is allowed."""


@dataclass(frozen=True)
class ScanConfig:
    """Everything a scan needs to know.

    Attributes:
        source: `s3://bucket/prefix`, `gs://...`, a local folder, a `file://` URI, or a
            manifest (`.parquet` with a `uri` column, or a text file of URIs, one per line).
        output: destination prefix; rows land in `output/scan_id=<id>/*.parquet`.
        classifier_checkpoint / segmenter_checkpoint: safetensors files; None = bundled default.
        batch_size: images per model call.
        num_model_actors: size of the model actor pool: N, (min, max) for autoscaling, or `auto`:
            from one actor up to what the cluster holds (`model_pool_size`), so a nightly increment
            starts one actor and a full scan grows to all cores or GPUs.
        gpus_per_actor: GPUs reserved per model actor; 0 on CPU-only clusters, fractions allowed.
        cpus_per_actor / decode_cpus: CPUs reserved per model actor and per fetch-and-decode task.
            Equal on CPU (the default): Ray Data then fuses listing-skip, decode and the models into
            each actor, so blocks go from listing to actor without an object-store hop, and each
            half-CPU actor decodes and infers in turn with one torch thread, so `auto` keeps every core
            busy with about one actor each. (On 2 CPUs this measured level with the earlier single 1-CPU
            actor fed by decode tasks: 600 images, three alternating runs, docs/performance.md "End to
            end"; on larger nodes that single actor left the other cores idle.) With GPU actors the two
            never fuse (their GPU asks differ): decoding stays on CPU tasks and the GPU never waits on it.
        max_pixels: larger images become `too_large` error rows (Pillow's own bomb limit follows it).
        max_bytes: larger objects become `too_large` error rows, judged by the listing's size before
            any byte is read (objects are read whole into a worker's memory).
        min_side: images with a side shorter than this get a `too_small` error row instead of a verdict:
            the models cannot judge a handful of pixels.
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
    num_model_actors: int | tuple[int, int] | str = AUTO
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 0.5
    decode_cpus: float = 0.5
    decode_batch_size: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = 1 << 30
    min_side: int = 16
    analysis: str = NATIVE
    match_bank: str | None = None
    address: str | None = None
    full: bool = False
    rescan_on_model_change: bool = False
    scan_id: str | None = None
    extensions: tuple[str, ...] = field(default_factory=tuple)
    storage_options: dict = field(default_factory=dict)
    rows_per_file: int = 512
    show_progress: bool = True

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def listing_block_rows(self) -> int:
        """Objects per block after the listing (and through the skip stage): big enough that Ray's per-block cost
        is negligible, small enough that work spreads over the cluster and results commit as the scan goes."""
        return max(32, 4 * self.decode_batch_size)

    def model_pool_size(self, cluster_cpus: float, cluster_gpus: float,
                        pending_objects: int | None = None) -> int | tuple[int, int]:
        """The actor pool this scan asks Ray Data for. `auto` scales from 1 to as many actors as the cluster
        holds: one per `gpus_per_actor` GPUs, or on CPU one per core while the pipeline's own tasks still fit
        (each CPU actor decodes and infers with one torch thread, so it keeps about one core busy).
        With `pending_objects` known (an incremental scan lists first), no pool is larger than its batches."""
        if self.num_model_actors != AUTO:
            pool = self.num_model_actors
        elif self.gpus_per_actor > 0:
            pool = (1, max(1, int(cluster_gpus // self.gpus_per_actor)))
        else:
            pool = (1, max(1, min(int(cluster_cpus), int((cluster_cpus - PIPELINE_TASK_CPUS) // self.cpus_per_actor))))
        if pending_objects is None:
            return pool
        batches = max(1, -(-pending_objects // self.batch_size))
        return tuple(min(size, batches) for size in pool) if isinstance(pool, tuple) else min(pool, batches)

    def resource_problem(self, cluster_cpus: float) -> str | None:
        """Why this scan could never make progress on a cluster with `cluster_cpus` CPUs, or None: the model
        actors Ray Data starts first must leave room for the 1-CPU repartition task, or everything waits forever."""
        pool = self.num_model_actors
        first_actors = 1 if pool == AUTO else pool[0] if isinstance(pool, tuple) else pool
        tasks = max(PIPELINE_TASK_CPUS, self.decode_cpus)
        if first_actors * self.cpus_per_actor + tasks <= cluster_cpus + 1e-9:
            return None
        return (f"--actors {first_actors} x --cpus-per-actor {self.cpus_per_actor:g} = "
                f"{first_actors * self.cpus_per_actor:g} CPUs leave less than the {tasks:g} CPU the listing, decode and "
                f"write tasks need on a cluster of {cluster_cpus:g} CPUs, so the scan would wait forever. "
                + ("Ask for fewer actors or CPUs per actor (e.g. --actors auto --cpus-per-actor "
                   f"{ScanConfig.cpus_per_actor:g})." if ScanConfig.cpus_per_actor + tasks <= cluster_cpus
                   else f"Scan on a machine or cluster with at least {ScanConfig.cpus_per_actor + tasks:g} CPUs."))

    def problems(self) -> list[str]:
        """Every setting no scan can run with, as `--flag VALUE: what is allowed` (checked before anything starts)."""
        found: list[str] = []

        def whole(flag: str, value, minimum: int = 1) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                found.append(f"{flag} {value}: must be a whole number >= {minimum}")

        def amount(flag: str, value, minimum: float = 0.0, allow_minimum: bool = True) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
                value >= minimum if allow_minimum else value > minimum)
            if not ok:
                found.append(f"{flag} {value}: must be a number {'>=' if allow_minimum else '>'} {minimum:g}")

        if not str(self.source).strip():
            found.append("SOURCE is empty: pass a folder, a manifest or an s3:// / gs:// URI")
        if not str(self.output).strip():
            found.append("--output is empty: pass a folder or an s3:// / gs:// prefix")
        whole("--batch-size", self.batch_size)
        whole("--decode-batch-size", self.decode_batch_size)
        whole("--rows-per-file", self.rows_per_file)
        whole("--max-pixels", self.max_pixels)
        whole("--max-bytes", self.max_bytes)
        whole("--min-side", self.min_side)
        pool = self.num_model_actors
        if pool == AUTO:
            pass
        elif isinstance(pool, tuple):
            if len(pool) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in pool):
                found.append(f"--actors {'-'.join(map(str, pool))}: MIN and MAX must be whole numbers >= 1")
            elif pool[0] > pool[1]:
                found.append(f"--actors {pool[0]}-{pool[1]}: MIN is larger than MAX; write it as {pool[1]}-{pool[0]}")
        else:
            whole("--actors", pool)
        amount("--gpus-per-actor", self.gpus_per_actor)
        amount("--cpus-per-actor", self.cpus_per_actor, allow_minimum=False)
        amount("--decode-cpus", self.decode_cpus, allow_minimum=False)
        if self.gpus_per_actor > 1 and self.gpus_per_actor != int(self.gpus_per_actor):
            found.append(f"--gpus-per-actor {self.gpus_per_actor}: above 1 it must be a whole number of GPUs")
        if self.analysis not in ANALYSIS_MODES:
            found.append(f"--analysis {self.analysis}: must be one of {', '.join(ANALYSIS_MODES)}")
        for extension in self.extensions:
            if not extension.strip(" .") or "/" in extension:
                found.append(f"--extensions: {extension!r} is not a file suffix (write them like .jpg,.png)")
        if self.scan_id is not None and (not self.scan_id.strip() or any(c in self.scan_id for c in "/\\=")):
            found.append(f"--scan-id {self.scan_id!r}: must be non-empty and contain no / \\ or =")
        if self.address is not None and not str(self.address).strip():
            found.append("--address is empty: pass host:port, ray://host:port, auto or local")
        return found
