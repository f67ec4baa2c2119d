"""The project-local PostgreSQL behind `make run` and `make db`: when it cannot start, the developer is
told why in one message, not with a traceback and "examine the log output"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

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
