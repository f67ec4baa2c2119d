"""CPU time each part of the system spends over a stretch of work, for `make bench`.

On a machine where the services, PostgreSQL and the load generator share the cores, throughput is bound
by the CPU each event costs in all of them together; these figures show where it goes.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

import psutil


def _seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (PostgreSQL's backends, a service's workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class CpuMeter:
    """CPU seconds (user + system) per named process tree between `start()` and `stop()`. A process that
    appears in a tree meanwhile (a new database connection) counts whole; one that ends meanwhile is lost."""

    roots: dict[str, int]
    _start: dict[tuple[int, float], float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {}
        for pid in self.roots.values():
            for process in _tree(pid):
                with suppress(psutil.NoSuchProcess):
                    self._start[(process.pid, process.create_time())] = _seconds(process)

    def stop(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pid in self.roots.items():
            total = 0.0
            for process in _tree(pid):
                with suppress(psutil.NoSuchProcess):
                    total += _seconds(process) - self._start.get((process.pid, process.create_time()), 0.0)
            used[name] = total
        return used
