"""`make run` as a developer uses it: the runner starts every service, they take webhooks, and Ctrl-C in
the terminal stops them all cleanly, in drain order, leaving nothing behind."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from devstack.stack import free_port
from trigger.delivery import send, sign
from trigger.events import StripeScenario

from tests.e2e.conftest import STRIPE_SECRET


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("replicas", [1, 2])
async def test_make_run_serves_webhooks_and_ctrl_c_stops_everything_cleanly(database_url, tmp_path, replicas):
    gateway_port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
           "GATEWAY_PORT": str(gateway_port), "BILLING_ADDR": f"127.0.0.1:{free_port()}",
           "NOTIFIER_ADDR": f"127.0.0.1:{free_port()}", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()),
           "SMTP_TLS": "none", "LOG_LEVEL": "WARNING"}
    if replicas > 1:
        env["REPLICAS"] = str(replicas)
    else:
        env.pop("REPLICAS", None)  # make run without REPLICAS behaves as it always has
    out = tmp_path / "run.out"
    with open(out, "wb") as sink:
        # A session of its own, like a terminal's foreground job: Ctrl-C goes to the whole group.
        runner = subprocess.Popen([sys.executable, "-m", "devstack", "run"], env=env, stdout=sink,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Stop: Ctrl-C" not in out.read_text():
            assert runner.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            await asyncio.sleep(0.1)
        services = _children(runner.pid)
        assert len(services) == 3 * replicas

        async with aiohttp.ClientSession() as session:  # enough webhooks for every gateway to take some
            for _ in range(10 * replicas):
                event = StripeScenario(tenant_id="acme").event("payment_intent.processing")
                response = await send(session, f"http://127.0.0.1:{gateway_port}", sign("stripe", event, STRIPE_SECRET))
                assert response.status == 200 and response.body["processing_result"]["status"] == "processed"

        os.killpg(runner.pid, signal.SIGINT)
        assert runner.wait(60) == 0, out.read_text()
        names = [f"{name}{'' if i == 0 else f'-{i + 1}'}" for name in ("webhook-gateway", "billing", "notifier")
                 for i in range(replicas)]
        stopped = out.read_text().split("stopped: ", 1)[1].splitlines()[0]
        assert ast.literal_eval(stopped) == {name: 0 for name in names}  # the runner prints the exit codes
        assert not [pid for pid in services if _alive(pid)]
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
