"""Peak memory and CPU time of the benchmark's process tree, sampled in a background thread.

Processes are grouped so a reader can tell where resources go: the driver
(this process), the bare-loop child, Ray workers (task and actor processes),
Ray's own daemons, and the loopback S3 server (it holds the archive, so it is
reported but not counted against forgescan).

Memory is summed as private RSS (resident minus file-backed and shared pages,
from /proc/PID/statm: cheap enough to sample every second), so libtorch's
pages mapped by every worker are not counted ten times; PSS (which also
splits the object store's shared memory fairly) costs ~10 ms per process to
read, so it is sampled only every `pss_every` samples. The largest single
worker is reported as RSS. CPU seconds per group, and the CPU that processes
outside this tree used meanwhile, show whether a measurement was disturbed by
other work.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

try:
    import psutil
except ImportError:  # Ray vendors psutil; importing ray puts it on sys.path
    import ray  # noqa: F401
    import psutil

GROUPS = ("driver", "bare_loop", "ray_workers", "ray_system", "s3_server")


def process_group(process: "psutil.Process", driver: "psutil.Process") -> str:
    if process.pid == driver.pid:
        return "driver"
    try:
        command = process.cmdline()
        if command == driver.cmdline():
            return "forked_copy"
        command = " ".join(command)
    except psutil.Error:
        return "ray_system"
    if "moto.server" in command:
        return "s3_server"
    if "multiprocessing" in command and "spawn" in command:
        return "bare_loop"
    if command.startswith("ray::") or "default_worker.py" in command:
        return "ray_workers"
    return "ray_system"


@dataclass
class ResourceWindow:
    """What one measurement window used: peak memory per group (MiB) and CPU seconds per group."""

    started: float = field(default_factory=time.monotonic)
    peak_mib: dict = field(default_factory=lambda: {group: 0.0 for group in GROUPS})
    peak_pss_mib: dict = field(default_factory=lambda: {group: 0.0 for group in GROUPS})
    largest_worker_rss_mib: float = 0.0
    workers_at_peak: int = 0
    worker_titles_at_peak: dict = field(default_factory=dict)  # process title -> [count, private MiB] at the peak
    cpu_seconds: dict = field(default_factory=lambda: {group: 0.0 for group in GROUPS})
    machine_busy_start: float = field(default_factory=lambda: _machine_busy_seconds())
    samples: int = 0

    def to_dict(self) -> dict:
        wall = max(time.monotonic() - self.started, 1e-9)
        ours = sum(self.cpu_seconds.values())
        others = max(0.0, _machine_busy_seconds() - self.machine_busy_start - ours)
        return {
            **{f"{group}_peak_mib": round(value, 1) for group, value in self.peak_mib.items()},
            "peak_pss_mib_sampled": {group: round(value, 1) for group, value in self.peak_pss_mib.items()},
            "largest_worker_rss_mib": round(self.largest_worker_rss_mib, 1),
            "workers_at_peak": self.workers_at_peak,
            "worker_titles_at_peak": {title: [count, round(mib, 1)] for title, (count, mib) in
                                      sorted(self.worker_titles_at_peak.items(), key=lambda item: -item[1][1])},
            "cpu_seconds": {group: round(value, 1) for group, value in self.cpu_seconds.items()},
            "other_processes_cores": round(others / wall, 2),
            "samples": self.samples,
        }


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class ProcessTreeSampler:
    """Samples this process and all its descendants every `interval` s; `reset()` opens a new window."""

    def __init__(self, interval: float = 1.0, pss_every: int = 10):
        self.interval = interval
        self.pss_every = pss_every
        self._count = 0
        self.driver = psutil.Process()
        self._groups: dict[int, str] = {}
        self._cpu_seen: dict[int, float] = {}
        self._lock = threading.Lock()
        self._window = ResourceWindow()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-tree-sampler", daemon=True)

    def __enter__(self) -> "ProcessTreeSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self.sample()
        with self._lock:
            self._window = ResourceWindow()

    def window(self) -> dict:
        self.sample()
        with self._lock:
            return self._window.to_dict()

    def sample(self) -> None:
        self._count += 1
        with_pss = self._count % self.pss_every == 1
        memory = {group: 0.0 for group in GROUPS}
        pss = {group: 0.0 for group in GROUPS}
        cpu = {group: 0.0 for group in GROUPS}
        largest_worker, workers = 0.0, 0
        titles: dict[str, list] = {}
        processes = [self.driver]
        try:
            processes += self.driver.children(recursive=True)
        except psutil.Error:
            pass
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    info = process.memory_info()
                group = self._groups.get(process.pid)
                if group is None or group == "ray_system":  # a pooled worker renames itself after start-up
                    group = self._groups[process.pid] = process_group(process, self.driver)
                if with_pss and group != "forked_copy":
                    pss[group] += process.memory_full_info().pss / 2**20
            except psutil.Error:
                continue
            if group == "forked_copy":  # a child between fork and exec still looks like the driver
                self._groups.pop(process.pid, None)
                continue
            used = times.user + times.system
            cpu[group] += used - self._cpu_seen.get(process.pid, 0.0)
            self._cpu_seen[process.pid] = used
            memory[group] += (info.rss - getattr(info, "shared", 0)) / 2**20
            if group == "ray_workers":
                workers += 1
                largest_worker = max(largest_worker, info.rss / 2**20)
                try:
                    title = process.cmdline()[0][:60]
                except (psutil.Error, IndexError):
                    title = "?"
                entry = titles.setdefault(title, [0, 0.0])
                entry[0] += 1
                entry[1] += (info.rss - getattr(info, "shared", 0)) / 2**20
        with self._lock:
            window = self._window
            for group in GROUPS:
                window.cpu_seconds[group] += cpu[group]
                window.peak_mib[group] = max(window.peak_mib[group], memory[group])
                window.peak_pss_mib[group] = max(window.peak_pss_mib[group], pss[group])
            if memory["ray_workers"] >= window.peak_mib["ray_workers"]:
                window.workers_at_peak = workers
                window.worker_titles_at_peak = titles
            window.largest_worker_rss_mib = max(window.largest_worker_rss_mib, largest_worker)
            window.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
