"""Making emails (validation, Jinja rendering, CSS inlining) in worker processes.

Rendering is most of the CPU an accepted email costs; on the event loop it would hold up delivery and every
RPC. Worker processes put it on the other cores. Each batch is split across the workers; a refusal comes
back as a value. A worker that dies (e.g. killed for memory) breaks the pool: it is replaced and the
batch made once more, so callers see an error only if the fresh pool fails too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from servicekit.gctune import settle_after_startup

from notifier.domain.accept import EmailFactory, Submission
from notifier.domain.ports import NewEmail
from notifier.domain.contents import InvalidEmailRequest
from notifier.domain.render import Renderer

_factory: EmailFactory | None = None


def _start_worker(message_domain: str) -> None:
    global _factory
    # Ctrl-C in a terminal reaches the whole process group: the service decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_leave_with_service, name="leave-with-service", daemon=True).start()
    _factory = EmailFactory(Renderer(), message_domain)
    settle_after_startup()


def _leave_with_service() -> None:
    """Exit once the notifier has. Stopped as usual, it stops its workers; killed outright (SIGKILL, the OOM
    killer) it cannot, and outside a container that dies whole they would stay, each holding its memory."""
    service = multiprocessing.parent_process()
    if service is not None:
        service.join()  # returns once the notifier has exited, however it ended
        os._exit(0)


def _make_all(submissions: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]:
    assert _factory is not None, "worker started without its initializer"
    return _factory.make_all(submissions)


class WorkerEmails:
    def __init__(self, workers: int, message_domain: str) -> None:
        self._workers = workers
        self._domain = message_domain
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process that runs gRPC's threads is unsafe.
        return ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self._domain,))

    async def start(self) -> None:
        """Start the workers (each imports and builds its renderer) before traffic, so the first requests
        do not wait for that."""
        await asyncio.gather(*(self._run([]) for _ in range(self._workers)))

    async def make_all(self, submissions: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]:
        if not submissions:
            return []
        size = -(-len(submissions) // self._workers)
        chunks = [submissions[i:i + size] for i in range(0, len(submissions), size)]
        try:
            made = await asyncio.gather(*(self._run(chunk) for chunk in chunks))
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            made = await asyncio.gather(*(self._run(chunk) for chunk in chunks))
        return [email for chunk in made for email in chunk]

    async def _run(self, chunk: Sequence[Submission]) -> list[NewEmail | InvalidEmailRequest]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _make_all, list(chunk))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
