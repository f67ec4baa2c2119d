"""`make bench`'s load generator speaks HTTP/1.1 itself, so its figures are only as good as its parsing:
every answer is counted once, by status, only 2xx answers count as acknowledged, and a connection the
server drops, during a request or between two, is counted as an error and replaced."""

from __future__ import annotations

import subprocess
import sys

from aiohttp import web
from devstack.cpumeter import CpuMeter
from devstack.loadgen import build, run
from devstack.stack import free_port


async def test_load_generator_counts_every_answer_by_its_status_over_kept_alive_connections():
    seen: list[str] = []
    peers: set[tuple[str, int]] = set()

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(request.match_info["provider"])
        peers.add(request.transport.get_extra_info("peername"))
        if len(seen) % 50 == 25:  # the server hangs up without an answer: counted, and a new connection
            request.transport.close()
            return web.Response()
        if len(seen) in (12, 112):  # answered, then the server closes: that connection's next request fails
            answer = web.Response(body=b"{}", content_type="application/json")
            answer.force_close()
            return answer
        if len(seen) % 5 == 0:  # every fifth is refused, with a body of another length
            return web.json_response({"error": {"code": "billing_unavailable"}}, status=503)
        return web.Response(body=b"{}" * (len(body) % 7), content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks/{provider}", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        deliveries = build(200, "whsec_s", "r")
        result = await run(f"http://127.0.0.1:{port}", deliveries, concurrency=8)
    finally:
        await runner.cleanup()

    assert result["sent"] == 200 and len(seen) == 198  # two never reached the server
    assert result["errors"] == {"HTTP 503": 35, "ConnectionError": 4 + 2}
    assert len(result["acknowledged"]) == 159
    assert {p for p, _ in result["acknowledged"]} == {"stripe", "razorpay"}
    assert len({e for _, e in result["acknowledged"]}) == 159  # each acknowledged event once
    assert 8 <= len(peers) <= 8 + 6  # kept alive: a connection per worker, and one per hang-up at most
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_cpu_meter_counts_the_cpu_a_process_tree_spends_only_while_it_measures():
    # A child of the measured process burns 1.0 s of CPU before the meter starts and 0.3 s after.
    burn = ("import sys, time\n"
            "def spend(s):\n"
            "    t = time.process_time() + s\n"
            "    while time.process_time() < t: pass\n"
            "spend(1.0); print('ready', flush=True); sys.stdin.readline()\n"
            "spend(0.3); print('done', flush=True); sys.stdin.readline()\n")
    with subprocess.Popen([sys.executable, "-c",
                           "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
                           "stdin=sys.stdin, stdout=sys.stdout).wait()", burn],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout.readline() == "ready\n"
        meter = CpuMeter({"tree": parent.pid})
        meter.start()
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "done\n"
        used = meter.stop()["tree"]
        parent.stdin.write("\n")
        parent.stdin.flush()
    assert 0.28 <= used < 0.9, used
