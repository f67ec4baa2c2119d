"""Notifier entry point: `python -m notifier [serve|migrate|render KIND [--out FILE]]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvloop
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from pgkit import partitions
from pgkit.pool import create_pool
from servicekit.authz import Policy, server_policy
from servicekit.env import ConfigError
from servicekit.grpcserve import listen, new_server, serve_until_signalled
from servicekit.logs import configure_logging, run_logged
from servicekit.metrics import serve_metrics
from servicekit.worker import PollingWorker

from notifier.adapters import retention
from notifier.adapters.dkim import DkimSigner
from notifier.adapters.postgres import MIGRATIONS, PostgresEmailLog, migrate
from notifier.adapters.smtp import SmtpSender, SmtpSettings
from notifier.adapters.workers import WorkerEmails
from notifier.api.metrics import CountingLog, TimedSender
from notifier.api.servicer import NotifierServicer
from notifier.config import Settings
from notifier.domain.erasure import EraseRecipient
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.deliver import DeliverEmails, RetryPolicy
from notifier.domain.operations import ReadEmails, RequeueFailedEmails
from notifier.domain.contents import EmailKind, InvalidEmailRequest
from notifier.domain.locales import update_catalogs
from notifier.domain.model import Branding, validate
from notifier.domain.render import SUBJECTS, TEMPLATES, Renderer
from notifier.domain.samples import SAMPLE_BRANDING, sample

log = logging.getLogger("notifier")

SERVICE_NAME = notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name


async def serve(settings: Settings, authz: Policy | None, dkim: DkimSigner | None) -> None:
    assert settings.grpc_tls is not None and settings.smtp_host is not None, "read for serving"
    # Every notifier statement is an index lookup; a plan made while email_logs was small must not
    # stay a sequential scan as it grows.
    pool = await create_pool(settings.database_url.value, min_size=2, max_size=settings.db_pool_size,
                             application_name="notifier", settings={"enable_seqscan": "off"})
    smtp = SmtpSettings(
        host=settings.smtp_host, port=settings.smtp_port, username=settings.smtp_user,
        password=settings.smtp_password.value if settings.smtp_password else None,
        from_email=settings.from_email, tls=settings.smtp_tls,
        timeout_seconds=settings.smtp_timeout_seconds, ca_file=settings.smtp_ca_file,
    )
    sender = SmtpSender(smtp, connections=settings.smtp_connections, dkim=dkim)
    domain = settings.from_email.rpartition("@")[2] or "boxcostpro.com"
    workers = WorkerEmails(settings.render_workers, domain) if settings.render_workers else None
    try:
        await partitions.prepare(pool, retention.TABLES, settings.retention, datetime.now(UTC))
        email_log = PostgresEmailLog(pool)
        renderer = Renderer()
        policy = RetryPolicy(max_attempts=settings.max_attempts,
                             give_up_after=timedelta(seconds=settings.retry_for_seconds))
        deliver = DeliverEmails(CountingLog(email_log), TimedSender(sender), policy, clock=lambda: datetime.now(UTC),
                                concurrency=settings.smtp_connections,
                                send_limit=timedelta(seconds=smtp.send_limit_seconds), rng=random.Random())
        worker = PollingWorker(deliver.run_once, email_log.next_due_in, name="email-delivery")
        if workers is not None:
            await workers.start()
        accept = AcceptEmail(email_log, workers or InlineEmails(EmailFactory(renderer, domain)),
                             on_accepted=worker.wake)
        server = new_server(authz)
        notifier_pb2_grpc.add_NotifierServiceServicer_to_server(
            NotifierServicer(accept, ReadEmails(email_log), renderer,
                             RequeueFailedEmails(email_log, on_queued=worker.wake), EraseRecipient(email_log)),
            server
        )
        health = listen(server, settings.listen_addr, SERVICE_NAME, settings.grpc_tls)
        log.info("notifier listening", extra={"fields": {"addr": settings.listen_addr,
                                                         "smtp": f"{settings.smtp_host}:{settings.smtp_port}"}})
        worker.start()
        serve_metrics(settings.metrics_port)
        await serve_until_signalled(server, health, [SERVICE_NAME], settings.shutdown_grace_seconds,
                                    on_draining=lambda: worker.stop(settings.shutdown_grace_seconds),
                                    health_port=settings.health_port)
    finally:
        await sender.close()
        await pool.close()
        if workers is not None:
            workers.close()


async def keep_for_retention(settings: Settings) -> None:
    pool = await create_pool(settings.database_url.value, min_size=1, max_size=1, application_name="notifier")
    try:
        done = await partitions.apply_retention(pool, retention.TABLES, retention.KEYS, settings.retention,
                                                 datetime.now(UTC))
    finally:
        await pool.close()
    log.info("retention applied", extra={"fields": done})


# Sample tenants for previews: one with a profile (its name, colour, logo and contacts), one without.
_SAMPLE_TENANTS = {"shree": SAMPLE_BRANDING, "none": Branding()}
_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def render(kind: str, out: Path | None, tenant: str = "shree", locale: str = "") -> int:
    """For designers: render a template with sample data (HTML to --out, with a PNG of it when Chromium is
    installed, or both parts to stdout)."""
    try:
        email_kind = EmailKind(kind)
    except ValueError:
        print(f"unknown kind {kind!r}; kinds: {', '.join(k.value for k in EmailKind)}", file=sys.stderr)
        return 2
    if tenant not in _SAMPLE_TENANTS:
        print(f"unknown sample tenant {tenant!r}; tenants: {', '.join(_SAMPLE_TENANTS)}", file=sys.stderr)
        return 2
    try:
        request = validate(replace(sample(email_kind, _SAMPLE_TENANTS[tenant]), locale=locale))
    except InvalidEmailRequest as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rendered = Renderer().render(request)
    if not out:
        print(f"Subject: {rendered.subject}\n\n{rendered.text}")
        return 0
    out.write_text(rendered.html)
    out.with_suffix(".txt").write_text(rendered.text)
    print(f"Subject: {rendered.subject}\nwrote {out} and {out.with_suffix('.txt')}")
    browser = next((found for name in _CHROMIUM if (found := shutil.which(name))), None)
    if browser is None:
        print("no Chromium on PATH: no PNG written")
        return 0
    png = out.with_suffix(".png")
    shot = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                           f"--screenshot={png.resolve()}", "--window-size=640,1000", out.resolve().as_uri()],
                          capture_output=True, text=True, timeout=60)
    print(f"wrote {png}" if shot.returncode == 0 and png.exists() else f"Chromium wrote no PNG: {shot.stderr[-300:]}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="notifier")
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "migrate", "render", "retention", "messages"],
                        help="retention: make the weeks ahead and drop the email log past RETENTION_DAYS")
    parser.add_argument("kind", nargs="?")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tenant", default="shree", help="render: the sample tenant, shree (with a profile) or none")
    parser.add_argument("--locale", default="", help="render: the customer's locale, such as hi-IN (default English)")
    args = parser.parse_args(argv[1:])
    if args.command == "render":
        return render(args.kind or "", args.out, args.tenant, args.locale)
    if args.command == "messages":
        missing = update_catalogs(TEMPLATES, list(SUBJECTS.values()))
        for language, texts in missing.items():
            print(f"{language}: {len(texts)} to translate" + "".join(f"\n  {t}" for t in texts))
        return 1 if any(missing.values()) else 0
    try:
        settings = Settings.from_env(os.environ, serving=args.command == "serve")
        authz = (server_policy(settings.grpc_tls.plaintext, settings.policy_file, [notifier_pb2.DESCRIPTOR])
                 if settings.grpc_tls else None)
        dkim = DkimSigner.from_file(*settings.dkim) if settings.dkim and args.command == "serve" else None
    except ConfigError as exc:
        print(f"notifier: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging("notifier", settings.log_level)
    if args.command == "migrate":
        directory = Path(settings.migrations_dir) if settings.migrations_dir else MIGRATIONS
        return run_logged(log, lambda: asyncio.run(migrate(settings.database_url.value, directory)))
    if args.command == "retention":
        return run_logged(log, lambda: asyncio.run(keep_for_retention(settings)))
    return run_logged(log, lambda: uvloop.run(serve(settings, authz, dkim)))


def run() -> None:
    """The image's entrypoint (the `boxcost-service` command)."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
