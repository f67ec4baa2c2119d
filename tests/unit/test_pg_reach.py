"""A database that cannot be reached is named in the error, without the credentials of its URL."""

from __future__ import annotations

import pytest
from pgkit.reach import DatabaseUnreachable, reaching, server_of


@pytest.mark.parametrize(("dsn", "server"), [
    ("postgresql://billing:s3cret@db.internal:6432/boxcostpro?sslmode=require", "db.internal:6432/boxcostpro"),
    ("postgres://billing@10.0.0.7/boxcostpro", "10.0.0.7:5432/boxcostpro"),
    ("postgresql://billing:s3cret@[fd00::5]:5433/boxcostpro", "fd00::5:5433/boxcostpro"),
    ("postgresql://billing:s3cret@db:notaport/boxcostpro", "the configured database"),
])
def test_the_server_is_named_without_credentials(dsn, server):
    assert server_of(dsn) == server


def test_a_connection_failure_names_the_server_and_keeps_its_cause():
    refused = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(DatabaseUnreachable) as raised, reaching("postgresql://u:s3cret@db.internal:6432/bc"):
        raise refused
    assert str(raised.value) == "cannot reach PostgreSQL at db.internal:6432/bc: [Errno 111] Connection refused"
    assert raised.value.__cause__ is refused


def test_errors_of_the_database_itself_pass_unchanged():
    with pytest.raises(ValueError, match="not a connection problem"), reaching("postgresql://db/bc"):
        raise ValueError("not a connection problem")


def test_a_connect_timeout_still_says_what_happened():
    with pytest.raises(DatabaseUnreachable, match=r"^cannot reach PostgreSQL at db:5432/bc: TimeoutError$"), \
            reaching("postgresql://db/bc"):
        raise TimeoutError
