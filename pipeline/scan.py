"""Build and run the scan graph: list -> skip done -> fetch+decode -> models -> rows -> committed Parquet."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from forensics.checkpoint import CheckpointError, bundled_checkpoint, read_checkpoint, validate_weights
from forensics.model_card import CLASSIFIER, SEGMENTER, ModelCard, default_classifier_card, default_segmenter_card
from pipeline.config import LIGHT_TASK_CPUS, TRIAGE, ScanConfig
from pipeline.listing import ArchiveListing
from pipeline.sink import CommittedParquetSink, scan_directory
from pipeline.hash_bank import load_hash_bank, match_hash_bank
from pipeline.stages import (
    DetectForgeries, ListingCounter, assemble_rows, fetch_and_decode, row_settings, skip_done_objects,
)
from pipeline.state import (
    COMPLETE, RUNNING, LeaseError, LeaseKeeper, PlanError, ScanManifest, ScanState, plan_scan, utc_now, validate_scan_id,
)
from pipeline.storage import (
    StorageError, check_reachable, check_source, describe_storage_error, filesystem_for, is_inside, parse_location,
    resolve_endpoint_url, storage_options_key, strip_credentials,
)

logger = logging.getLogger("forgescan")


class ScanError(RuntimeError):
    """A scan could not run; the message says why and what to change."""


@dataclass
class ScanSummary:
    scan_id: str
    source: str
    output: str
    mode: str
    listed: int
    skipped_unchanged: int
    already_committed: int
    processed: int
    ok: int
    errors: int
    verdicts: dict
    error_kinds: dict
    seconds: float
    classifier_version: str
    segmenter_version: str
    rows_in_scan: int = 0
    # Of skipped_unchanged: objects whose latest error is permanent (not an image, empty, ...), not read again.
    skipped_permanent_errors: int = 0
    notes: list[str] = field(default_factory=list)
    # Wall seconds of each phase, in order (PhaseClock): what a scan pays once, and the pipeline itself.
    timings: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        verdicts = ", ".join(f"{k} {v}" for k, v in self.verdicts.items()) or "none"
        lines = [
            f"forgescan scan {self.scan_id} ({self.mode}) finished",
            f"  source      {self.source}",
            f"  output      {self.output}/scan_id={self.scan_id}/",
            f"  listed      {self.listed} objects; {self.skipped_unchanged} unchanged since an earlier scan"
            + (f" ({self.skipped_permanent_errors} of them with a permanent error)" if self.skipped_permanent_errors else "")
            + ", "
            f"{self.already_committed} already done before a resume",
            f"  processed   {self.processed} in {self.seconds:.1f} s ({self.images_per_second:.1f} objects/s)",
            f"  results     {self.ok} ok, {self.errors} errors; rows in this scan: {self.rows_in_scan}",
            f"  verdicts    {verdicts}",
        ]
        if self.error_kinds:
            lines.append("  error kinds " + ", ".join(f"{k} {v}" for k, v in self.error_kinds.items()))
        lines.append(f"  models      classifier {self.classifier_version}, segmenter {self.segmenter_version}")
        if self.timings:
            lines.append("  time        " + ", ".join(f"{phase.replace('_', ' ')} {seconds:.1f} s" for phase, seconds in self.timings.items()))
        lines += [f"  note        {note}" for note in self.notes]
        return "\n".join(lines)


# The phases of a scan in the order they run (PhaseClock names; manifests store them sorted by name).
SCAN_PHASES = ("storage_checks", "cards", "planning", "ray_start", "checkpoints", "manifest", "pipeline", "counting",
               "state_table")


class PhaseClock:
    """Wall seconds per named phase of a scan, in the order they ran (summary, manifest, `forgescan benchmark`)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to `phase`."""
        now = time.monotonic()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self._last, 3)
        self._last = now


def load_model_payload(path: str | None, kind: str, validate: bool = True) -> tuple[bytes | None, ModelCard]:
    """Checkpoint bytes + card, validated in the driver so a bad file fails fast with a clear message
    (with validate=False, only the card is checked here: call validate_model_payload before use)."""
    default_card = default_classifier_card() if kind == CLASSIFIER else default_segmenter_card()
    resolved = path or bundled_checkpoint(kind)
    if resolved is None:
        return None, default_card
    data, card = read_checkpoint(resolved, expected_kind=kind)
    if validate:
        validate_model_payload(data, card, str(resolved))
    return data, card


def validate_model_payload(data: bytes | None, card: ModelCard, source: str) -> None:
    """Build the card's model from the weights: architecture, names and shapes must fit (raises CheckpointError);
    bytes proven before (forensics.checkpoint.validate_weights) are not built again."""
    if data is not None:
        validate_weights(data, card, source)


def ensure_output_writable(config: ScanConfig, endpoint_url: str | None) -> None:
    output = parse_location(config.output)
    check_reachable(output, endpoint_url, storage_options_key(config.storage_options))
    fs = filesystem_for(output.protocol, endpoint_url, storage_options_key(config.storage_options))
    try:
        if output.protocol == "s3":
            fs.ls(output.bucket, detail=False)
        else:
            fs.makedirs(output.path, exist_ok=True)
    except Exception as error:
        raise StorageError("Output: " + describe_storage_error(output, error, endpoint_url)) from None


CLUSTER_CONNECT_SECONDS = 5.0  # a named cluster that does not accept a connection in this long is taken as down


def check_cluster_address(address: str | None) -> None:
    """Refuse, in seconds, a cluster address that nothing answers at (a dead `ray start`, a stale RAY_ADDRESS):
    Ray itself would retry "Failed to connect to GCS" for minutes."""
    import os
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    given = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS") or None
    named = (f"--address {address}" if address not in (None, "auto") else
             f"RAY_ADDRESS={given}" if given else f"--address {address}" if address else
             "the cluster `ray start` last recorded on this host")
    fix = ("Start the cluster (`ray start --head`), correct --address / RAY_ADDRESS, "
           "or scan on this machine alone with --address local.")
    try:
        target = address[len("ray://"):] if address and address.startswith("ray://") else canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError) as error:
        found = "no running Ray cluster" if isinstance(error, ConnectionError) else str(error)
        raise ScanError(f"Cannot join a Ray cluster for {named}: {found}. {fix}") from None
    if target is None:
        return  # a private local instance: nothing to reach
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CLUSTER_CONNECT_SECONDS).close()
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
        raise ScanError(f"No Ray cluster answers at {given or target} ({named}): {reason}. {fix}") from None


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of the alive nodes of the Ray cluster this driver joined."""
    import ray

    alive = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    return sum(r.get("CPU", 0.0) for r in alive), sum(r.get("GPU", 0.0) for r in alive)


def check_cpus(config: ScanConfig) -> None:
    """Refuse an actor pool that leaves the pipeline's own tasks no CPU: the scan would wait forever."""
    problem = config.resource_problem(cluster_resources()[0])
    if problem:
        raise ScanError(problem)


def check_gpus(gpus_per_actor: float) -> None:
    """Refuse --gpus-per-actor that no node of the cluster can give: the model actors would wait forever."""
    import ray

    if gpus_per_actor <= 0:
        return
    most = max((node["Resources"].get("GPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if most < gpus_per_actor:
        where = "no node of the Ray cluster has a GPU" if most == 0 else f"the most GPUs on one node is {most:g}"
        raise ScanError(f"--gpus-per-actor {gpus_per_actor:g}: {where}, so the model actors could never start. "
                        "Scan on CPU with --gpus-per-actor 0, or attach to a cluster with GPUs (--address).")


def _init_ray(address: str | None) -> None:
    """Join the cluster `address` names (or RAY_ADDRESS, or a `ray start` on this host), else start a
    private local instance -- without the dashboard, which costs seconds and a CPU share on every
    start (for a dashboard, `ray start --head` and scan with `--address auto`)."""
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    if ray.is_initialized():
        return
    import signal

    starts_local = address == "local" or (address is None and canonicalize_bootstrap_address(None) is None)
    extra = {"include_dashboard": False} if starts_local else {}
    # Ray's core worker installs a C++ failure handler for SIGTERM (a stack dump, then abort: exit 134);
    # put back the caller's Python handler, so `forgescan scan` stops cleanly with 143.
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True, **extra)
    except ConnectionError as error:
        raise ScanError(f"Cannot join the Ray cluster at {address or 'RAY_ADDRESS'}: {error} "
                        "Correct --address / RAY_ADDRESS, or scan on this machine alone with --address local.") from None
    if callable(sigterm_handler):
        signal.signal(signal.SIGTERM, sigterm_handler)


def run_scan(config: ScanConfig) -> ScanSummary:
    """Run one scan to completion (or resume an interrupted one) and return its summary.

    One driver per output: the scan holds the output's lease (renewed by a heartbeat)
    from planning to its last commit; a second driver is refused with a message naming
    the first, and takes over only when that driver is dead.

    Raises:
        StorageError / CheckpointError / ScanError with a message that names the input and the fix.
    """
    if config.scan_id is not None:
        try:
            validate_scan_id(config.scan_id)
        except ValueError as error:
            raise ScanError(str(error)) from None
    clock = PhaseClock()
    check_cluster_address(config.address)
    endpoint_url = resolve_endpoint_url(config.endpoint_url)
    check_source(config.source, endpoint_url, config.storage_options)
    ensure_output_writable(config, endpoint_url)
    clock.lap("storage_checks")
    state = ScanState(parse_location(config.output), endpoint_url, config.storage_options)
    lease = LeaseKeeper(state)
    try:
        lease.acquire(config.scan_id or "(planning)", parse_location(config.source).uri)
    except LeaseError as error:
        raise ScanError(str(error)) from None
    try:
        summary = _run_scan(config, lease, clock)
    finally:
        lease.release()
    if lease.took_over is not None:
        summary.notes.append(f"took over the output from a dead driver ({lease.took_over.owner.rsplit(':', 1)[0]}, "
                             f"scan {lease.took_over.scan_id})")
    return summary


def _run_scan(config: ScanConfig, lease: LeaseKeeper, clock: PhaseClock) -> ScanSummary:
    """The scan itself, once run_scan has checked the source and output and holds the lease."""
    import ray

    started = time.monotonic()
    endpoint_url = resolve_endpoint_url(config.endpoint_url)
    options_json = storage_options_key(config.storage_options)
    classifier_weights, classifier_card = load_model_payload(config.classifier_checkpoint, CLASSIFIER, validate=False)
    segmenter_weights, segmenter_card = load_model_payload(config.segmenter_checkpoint, SEGMENTER, validate=False)
    # Building both models from their weights proves they fit their cards; it takes seconds (timm, smp),
    # so it runs while the plan is made and Ray starts, and nothing is written before it has passed.
    def validate_both() -> None:
        for weights, card, path, kind in ((classifier_weights, classifier_card, config.classifier_checkpoint, CLASSIFIER),
                                          (segmenter_weights, segmenter_card, config.segmenter_checkpoint, SEGMENTER)):
            validate_model_payload(weights, card, str(path or bundled_checkpoint(kind)))

    checkpoint_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forgescan-checkpoints")
    validation = checkpoint_pool.submit(validate_both)
    checkpoint_pool.shutdown(wait=False)  # its one thread ends with the validation; no thread left per scan
    if config.analysis == TRIAGE:
        classifier_card, segmenter_card = classifier_card.for_triage(), segmenter_card.for_triage()
    hash_bank = load_hash_bank(config.match_bank, endpoint_url, options_json) if config.match_bank else None
    clock.lap("cards")

    source_uri = parse_location(config.source).uri
    output = parse_location(config.output)
    state = ScanState(output, endpoint_url, config.storage_options)
    if config.scan_id and any(m.scan_id == config.scan_id and m.state == COMPLETE for m in state.manifests()):
        raise ScanError(f"Scan {config.scan_id} in {output.uri} is already complete; omit --scan-id to start a new scan.")
    try:
        plan = plan_scan(state, source_uri, config.scan_id, config.full, config.rescan_on_model_change,
                         classifier_card.version, segmenter_card.version)
    except PlanError as error:
        raise ScanError(str(error)) from None
    lease.update_scan(plan.scan_id)
    clock.lap("planning")

    _init_ray(config.address)
    check_gpus(config.gpus_per_actor)
    check_cpus(config)
    clock.lap("ray_start")
    validation.result()  # raises the checkpoint's CheckpointError
    clock.lap("checkpoints")
    manifest = ScanManifest(
        scan_id=plan.scan_id, source=source_uri, output=output.uri, state=RUNNING, started_at=utc_now(),
        classifier_version=classifier_card.version, segmenter_version=segmenter_card.version,
        endpoint_url=endpoint_url, mode=plan.mode, attempts=plan.attempts,
        thresholds={"ai_generated": classifier_card.threshold("ai_generated"),
                    "manipulated": segmenter_card.threshold("manipulated"), "pixel": segmenter_card.threshold("pixel")},
        segmenter_settings=segmenter_card.map_settings(),
    )
    state.write_manifest(manifest)
    logger.info("scan %s (%s) of %s -> %s", plan.scan_id, plan.mode, source_uri, output.uri)
    clock.lap("manifest")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = config.show_progress
    context.print_on_execution_start = False

    counter = ray.remote(num_cpus=0)(ListingCounter).remote()
    gpus = config.gpus_per_actor

    try:
        # One listing task (a quarter CPU, so it never waits behind the model actors). Ray coalesces
        # its output into large blocks; a repartition cuts them into `listing_block_rows` blocks.
        listing_block_rows = config.listing_block_rows
        listed_objects = ray.data.read_datasource(
            ArchiveListing(config.source, endpoint_url, config.storage_options, extensions=config.extensions,
                           block_rows=listing_block_rows, exclude=output.uri),
            override_num_blocks=1, num_cpus=LIGHT_TASK_CPUS,
        )
        skip_arguments = {"skip_uris_ref": ray.put(plan.skip_uris), "skip_identities_ref": ray.put(plan.skip_identities),
                          "skip_permanent_errors_ref": ray.put(plan.skip_permanent_errors),
                          "counter": counter, "endpoint_url": endpoint_url, "storage_options_json": options_json}
        pending = None
        if plan.expects_known_objects:
            # An increment (or a resume): most listed objects are known, so list and skip first, in the listing's
            # own task (listing rows only, no pixels), and start only the model actors the remaining objects can
            # keep busy: none when nothing is new.
            remaining = listed_objects.map_batches(skip_done_objects, batch_format="pyarrow", batch_size=None,
                                                   num_cpus=LIGHT_TASK_CPUS, fn_kwargs=skip_arguments).materialize()
            pending = remaining.count()
            dataset = remaining.repartition(target_num_rows_per_block=listing_block_rows)
        else:
            # Streaming: the skip stage asks what decoding asks, so it fuses into the model actors' operator.
            dataset = listed_objects.repartition(target_num_rows_per_block=listing_block_rows).map_batches(
                skip_done_objects, batch_format="pyarrow", batch_size=None, num_cpus=config.decode_cpus,
                fn_kwargs=skip_arguments)
        pool = config.model_pool_size(*cluster_resources(), pending_objects=pending)
        compute = (ray.data.ActorPoolStrategy(min_size=pool[0], max_size=pool[1]) if isinstance(pool, tuple)
                   else ray.data.ActorPoolStrategy(size=pool))
        dataset = dataset.map_batches(
            fetch_and_decode, batch_format="numpy", batch_size=config.decode_batch_size, num_cpus=config.decode_cpus,
            fn_kwargs={"classifier_card": classifier_card.to_dict(), "segmenter_card": segmenter_card.to_dict(),
                       "max_pixels": config.max_pixels, "max_bytes": config.max_bytes, "min_side": config.min_side,
                       "endpoint_url": endpoint_url,
                       "storage_options_json": options_json},
        )
        dataset = dataset.map_batches(
            DetectForgeries, batch_format="numpy", batch_size=config.batch_size, compute=compute,
            num_gpus=gpus if gpus > 0 else None, num_cpus=config.cpus_per_actor,
            fn_constructor_kwargs={
                "classifier_card": classifier_card.to_dict(),
                "classifier_weights": ray.put(classifier_weights) if classifier_weights else None,
                "segmenter_card": segmenter_card.to_dict(),
                "segmenter_weights": ray.put(segmenter_weights) if segmenter_weights else None,
                "analysis": config.analysis,
            },
            # Ray Data's actor defaults (max_restarts=-1, max_task_retries=-1) restart a dead actor
            # (e.g. killed for memory) and retry its batch; nothing is lost.
        )
        dataset = dataset.map_batches(
            assemble_rows, batch_format="numpy", batch_size=config.batch_size, num_cpus=LIGHT_TASK_CPUS,
            fn_kwargs={"scan_id": plan.scan_id, **row_settings(classifier_card, segmenter_card)},
        )
        if hash_bank is not None:
            dataset = dataset.map_batches(match_hash_bank, batch_format="pyarrow", batch_size=config.batch_size,
                                          num_cpus=LIGHT_TASK_CPUS, fn_kwargs={"bank": hash_bank})
        # A quarter CPU per write task: with a full CPU the writes wait behind the decode and
        # model stages, and results would only be committed at the very end of a scan.
        if pending != 0:
            dataset.write_datasink(CommittedParquetSink(output, plan.scan_id, endpoint_url, options_json,
                                                        rows_per_file=config.rows_per_file),
                                   ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
        listing = ray.get(counter.get.remote())
    except Exception as error:
        raise ScanError(
            f"Scan {plan.scan_id} stopped: {strip_credentials(_root_cause(error))}. Committed results are kept; run the same "
            "command again to resume."
        ) from error
    finally:
        ray.kill(counter)

    clock.lap("pipeline")
    lease.check()  # never mark a scan complete that another driver took over
    counts = state.count_rows(plan.scan_id)
    clock.lap("counting")
    try:  # fold this scan into the latest-state table (if the manifest below is never written, the next plan
        # sees a folded scan that is not complete and rebuilds the table); if this fails, the next plan folds it
        state.latest_state(columns=[], finishing=plan.scan_id)
    except Exception as error:  # noqa: BLE001 - the scan's rows are committed; only the planning table lags
        logger.warning("could not update the latest-state table of %s (%s: %s); the next scan brings it up to date",
                       output.uri, type(error).__name__, strip_credentials(str(error)))
    clock.lap("state_table")
    manifest.state = COMPLETE
    manifest.finished_at = utc_now()
    manifest.counts = {**counts, **listing}
    manifest.files = _count_files(state, plan.scan_id)
    clock.lap("manifest")
    manifest.timings = dict(clock.seconds)
    state.write_manifest(manifest)
    processed = listing["listed"] - listing["unchanged"] - listing["already_committed"]
    summary = ScanSummary(
        scan_id=plan.scan_id, source=source_uri, output=output.uri, mode=plan.mode, listed=listing["listed"],
        skipped_unchanged=listing["unchanged"], already_committed=listing["already_committed"], processed=processed,
        ok=counts["ok"], errors=counts["errors"], verdicts=counts["verdicts"], error_kinds=counts["error_kinds"],
        seconds=time.monotonic() - started, classifier_version=classifier_card.version,
        segmenter_version=segmenter_card.version, rows_in_scan=counts["rows"], timings=manifest.timings,
        skipped_permanent_errors=listing.get("unchanged_permanent_errors", 0),
    )
    if not classifier_card.trained or not segmenter_card.trained:
        summary.notes.append("untrained model weights in use: verdicts are not meaningful (see README, Training)")
    if is_inside(output, parse_location(config.source)):
        summary.notes.append(f"the output {output.uri} lies inside the source; it was left out of the listing")
    if summary.listed == 0:
        summary.notes.append(f"no objects found under {source_uri}")
    summary.notes += [*plan.notes, *state.unreadable_manifests.values(), *state.unreadable_files.values()]
    return summary


def _count_files(state: ScanState, scan_id: str) -> int:
    directory = scan_directory(state.output, scan_id)
    try:
        return sum(1 for p in state.fs.ls(directory.path, detail=False) if p.endswith(".parquet"))
    except FileNotFoundError:
        return 0


def _root_cause(error: BaseException) -> str:
    """The innermost user-level exception line from a Ray error chain, without Ray's wrapping."""
    import re

    pattern = re.compile(r"^(\w+\.)*\w*(Error|Exception|Interrupt)\b: .+")
    found = None
    while error is not None:
        for line in str(error).splitlines():
            if pattern.match(line.strip()) and "UserCodeException" not in line:
                found = found or line.strip()
        error = error.__cause__
    return found or "an internal Ray Data error (see the Ray logs)"


__all__ = ["CheckpointError", "ScanError", "ScanSummary", "StorageError", "run_scan"]
