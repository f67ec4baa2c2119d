"""Garbage collection for long-running servers: what start-up built stays out of every collection."""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Call once the service is built, before it takes traffic.

    What start-up made (modules, generated protobuf classes, the application) lives as long as the
    process; frozen, full collections no longer walk it (measured in the gateway under load: 40 ms pauses
    and ~5% of its CPU, gone). A larger first-generation threshold lets the many short-lived objects of
    a request die by reference count before a collection visits them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, 10, 10)
