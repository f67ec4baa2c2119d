"""A background worker that processes due work in rounds and sleeps until more is due or it is woken.

Used for the notifier's email delivery and billing's outbox dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 5.0


class PollingWorker:
    """`run_once()` does a round and returns how much it did; `next_due_in()` says when more is due."""

    def __init__(self, run_once: Callable[[], Awaitable[int]], next_due_in: Callable[[], Awaitable[float | None]],
                 name: str) -> None:
        self._run_once = run_once
        self._name = name
        self._next_due_in = next_due_in
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                if await self._run_once():
                    continue
                wait = await self._next_due_in()
            except Exception:  # the database may be away for a while; keep the worker alive
                log.exception("background round failed", extra={"fields": {"worker": self._name}})
                wait = IDLE_POLL_SECONDS
            timeout = IDLE_POLL_SECONDS if wait is None else min(wait, IDLE_POLL_SECONDS)
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stopping.wait())]
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def stop(self, grace_seconds: float) -> None:
        """Let the round in progress finish (within the grace period), then stop."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
