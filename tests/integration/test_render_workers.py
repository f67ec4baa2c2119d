"""Emails made in real worker processes: same results as on the event loop, in order, and a dead worker
does not take the notifier's accepting down with it."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import sys

import psutil
import pytest
from notifier.adapters.workers import WorkerEmails
from notifier.domain.accept import EmailFactory, Submission
from notifier.domain.ports import NewEmail
from notifier.domain.contents import EmailKind, InvalidEmailRequest
from notifier.domain.render import Renderer
from notifier.domain.samples import sample

from tests.support import wait_for


@pytest.fixture
def workers():
    workers = WorkerEmails(2, "boxcostpro.com")
    yield workers
    workers.close()


def submissions() -> list[Submission]:
    kinds = list(EmailKind)
    batch = [Submission(f"k{i}", sample(kinds[i % len(kinds)])) for i in range(20)]
    batch[7] = Submission("k7", dataclasses.replace(sample(EmailKind.PAYMENT_FAILED), to_email="not-an-address"))
    batch[12] = Submission("", sample(EmailKind.QUOTE_CREATED))
    return batch


def comparable(made: NewEmail | InvalidEmailRequest):
    if isinstance(made, InvalidEmailRequest):
        return ("refused", made.field, str(made))
    return (made.idempotency_key, made.request, made.rendered, made.fingerprint)


async def test_workers_make_what_the_event_loop_would_in_the_same_order(workers):
    batch = submissions()
    made = await workers.make_all(batch)
    inline = EmailFactory(Renderer(), "boxcostpro.com").make_all(batch)
    assert [comparable(m) for m in made] == [comparable(m) for m in inline]
    assert made[7].field == "content.to.email" and made[12].field == "idempotency_key"
    assert all(m.message_id.endswith("@boxcostpro.com>") for m in made if isinstance(m, NewEmail))
    assert len({m.message_id for m in made if isinstance(m, NewEmail)}) == 18


async def test_a_killed_worker_is_replaced_and_the_batch_still_made(workers):
    await workers.start()
    pool_workers = multiprocessing.active_children()
    assert len(pool_workers) == 2
    for process in pool_workers:
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    made = await workers.make_all(submissions())
    assert [m.idempotency_key for m in made if isinstance(m, NewEmail)] == [
        f"k{i}" for i in range(20) if i not in (7, 12)]


# A process that starts two render workers, writes their pids to the file it is given, and waits to be killed.
_WORKERS_HOST = """
import asyncio, multiprocessing, pathlib, sys
from notifier.adapters.workers import WorkerEmails

async def main():
    workers = WorkerEmails(2, "boxcostpro.com")
    await workers.start()
    pids = " ".join(str(p.pid) for p in multiprocessing.active_children())
    pathlib.Path(sys.argv[1]).write_text(pids + "\\n")
    await asyncio.Event().wait()  # holding `workers`: a pool let go would be shut down

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that whoever adopted it has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_workers_leave_when_the_notifier_is_killed_outright(tmp_path):
    # SIGKILL, or the OOM killer, gives the notifier no chance to stop its workers; outside a container that
    # dies whole, they would stay forever, each holding its memory.
    pid_file = tmp_path / "workers"
    host = await asyncio.create_subprocess_exec(sys.executable, "-c", _WORKERS_HOST, str(pid_file))
    try:
        async def started() -> bool:
            return pid_file.exists() and pid_file.read_text().endswith("\n")

        await wait_for(started, timeout=60, what="the workers to start")
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert len(pids) == 2
    finally:
        host.kill()
        await host.wait()

    async def workers_gone() -> bool:
        return all(_gone(pid) for pid in pids)

    await wait_for(workers_gone, timeout=10, what="the orphaned workers to exit")
