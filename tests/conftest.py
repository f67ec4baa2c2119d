"""Shared fixtures: a real, throwaway PostgreSQL for the whole session, a fresh database per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings
from billing.adapters.migrations import migrate as migrate_billing
from devstack.localpg import LocalPostgres, recreate_database, with_database
from devstack.stack import free_port
from notifier.adapters.postgres import migrate as migrate_notifier

TEMPLATE_DB = "billing_template"

# Every property test runs the same examples each time, so the suite's verdict never depends on luck;
# a test that sets its own settings keeps this unless it says otherwise.
settings.register_profile("same-examples-each-run", derandomize=True)
settings.load_profile("same-examples-each-run")


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_DATABASE_ADMIN_URL when given (a server we may create databases on), else our own server."""
    given = os.environ.get("TEST_DATABASE_ADMIN_URL")
    if given:
        yield given
        return
    pg = LocalPostgres(Path(tmp_path_factory.mktemp("pg")) / "data", free_port(), durable=False)
    pg.start()
    try:
        yield pg.url()
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres_admin_url: str) -> str:
    async def build() -> None:
        template_url = await recreate_database(postgres_admin_url, TEMPLATE_DB)
        await migrate_billing(template_url)
        await migrate_notifier(template_url)

    asyncio.run(build())
    return TEMPLATE_DB


@pytest.fixture
async def database_url(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {migrated_template}")
    finally:
        await conn.close()
    yield with_database(postgres_admin_url, name)
    conn = await asyncpg.connect(postgres_admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's database, for reading what the system wrote."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1, made by the tests."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, cert, ca_file


@pytest.fixture
def smtp_server(tls_ca):
    """A real SMTP server (aiosmtpd) requiring STARTTLS and AUTH, keeping what it accepts."""
    import ssl

    from devstack.mailsink import MailSink

    _, cert, ca_file = tls_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    sink = MailSink(free_port(), tls_context=context, credentials=("mailer", "s3cret")).start()
    sink.ca_file = ca_file
    yield sink
    sink.stop()
