"""What cannot start says why, once: a service as one JSON log line that log collectors keep whole, `make
run` and `make db` as a message to the developer, never a raw traceback or pg_ctl's "examine the log"."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from devstack.localpg import LocalPostgres, LocalPostgresError
from devstack.stack import free_port


def test_make_db_on_a_port_already_taken_says_so_and_how_to_choose_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        result = subprocess.run([sys.executable, "-m", "devstack", "db"], cwd=tmp_path, capture_output=True,
                                text=True, env={**env, "LOCAL_PG_PORT": str(port)}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"devstack: port {port} is already taken on 127.0.0.1 (by another checkout's PostgreSQL, or another "
        "program)",
        "devstack: set LOCAL_PG_PORT to a free port for the project-local PostgreSQL, or DATABASE_URL to a "
        "server of your own",
    ]


def test_a_server_that_will_not_start_is_reported_with_what_it_logged(tmp_path):
    pg = LocalPostgres(tmp_path / "data", free_port(), durable=False)
    pg.start()
    pg.stop()
    with open(pg.data_dir / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    with pytest.raises(LocalPostgresError) as refused:
        pg.start()
    message = str(refused.value)
    assert message.startswith(f"PostgreSQL did not start on port {pg.port}: ")
    assert 'configuration file "' in message and "contains errors" in message
    assert message.endswith(f"(log: {pg.data_dir / 'server.log'})")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _env(**settings: str) -> dict[str, str]:
    ours = ("DATABASE_URL", "GATEWAY_PORT", "GATEWAY_HOST", "BILLING_ADDR", "NOTIFIER_ADDR", "SMTP_HOST")
    return {**{k: v for k, v in os.environ.items() if k not in ours}, "GRPC_PLAINTEXT": "true",
            "STRIPE_WEBHOOK_SECRET": "whsec_start", "SMTP_HOST": "127.0.0.1", "LOG_LEVEL": "INFO", **settings}


@pytest.mark.parametrize("command", [["billing", "migrate"], ["billing", "serve"], ["notifier", "migrate"],
                                     ["notifier", "serve"]])
def test_a_service_whose_database_is_unreachable_logs_why_in_one_json_line_and_exits_1(command):
    nobody_listens = free_port()
    env = _env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{nobody_listens}/boxcostpro",
               BILLING_ADDR=f"127.0.0.1:{free_port()}", NOTIFIER_ADDR=f"127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (1, "")
    last = [json.loads(line) for line in result.stdout.splitlines()][-1]
    assert (last["level"], last["service"], last["message"]) == ("critical", command[0], "stopped by an error")
    said, _, why = last["error"].partition(": [Errno 111] ")  # the driver's words differ with the event loop
    assert said == f"DatabaseUnreachable: cannot reach PostgreSQL at 127.0.0.1:{nobody_listens}/boxcostpro" and why
    assert "Traceback" in last["exception"]


def test_a_gateway_whose_port_is_taken_logs_why_in_one_json_line_and_exits_1(taken_port):
    env = _env(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(taken_port), METRICS_PORT=str(free_port()))
    result = subprocess.run([sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (1, "")
    last = [json.loads(line) for line in result.stdout.splitlines()][-1]
    assert (last["level"], last["service"], last["message"]) == ("critical", "webhook-gateway", "stopped by an error")
    assert "address already in use" in last["error"] and str(taken_port) in last["error"]


def test_make_run_with_an_unreachable_database_says_which_step_failed_and_why(tmp_path):
    env = _env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/boxcostpro",
               SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), SMTP_TLS="none")
    result = subprocess.run([sys.executable, "-m", "devstack", "run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    *logged, said = result.stderr.splitlines()
    assert said == "devstack: billing migrate failed with exit code 1"
    assert json.loads(logged[-1])["error"].startswith("DatabaseUnreachable: cannot reach PostgreSQL at 127.0.0.1:")
