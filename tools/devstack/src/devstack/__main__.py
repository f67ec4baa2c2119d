"""`python -m devstack run|db|db-stop|bench`: the local stack behind `make run`, `make db`, `make bench`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from devstack.localpg import LocalPostgres, LocalPostgresError, ensure_database
from devstack.mailsink import MailSink
from devstack.stack import Stack, free_port

ROOT = Path.cwd()
LOCAL = ROOT / ".local"
LOCAL_PG_PORT = int(os.environ.get("LOCAL_PG_PORT", "54329"))
LOCAL_DB = "boxcostpro"


def local_postgres() -> LocalPostgres:
    return LocalPostgres(LOCAL / "pgdata", LOCAL_PG_PORT)


def database_url() -> str:
    """DATABASE_URL when set; otherwise the project-local PostgreSQL, started if needed."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    pg = local_postgres()
    pg.start()
    asyncio.run(ensure_database(pg.url(), LOCAL_DB))
    return pg.url(LOCAL_DB)


def _addr_port(name: str, default: str) -> int:
    return int(os.environ.get(name, default).rsplit(":", 1)[1])


def run() -> int:
    env = {"DATABASE_URL": database_url()}
    sink = None
    if not os.environ.get("SMTP_HOST"):
        mail_dir = LOCAL / "mail"
        sink = MailSink(free_port(), directory=mail_dir, fast=True).start()
        env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(sink.port), SMTP_TLS="none")
    stack = Stack(
        env,
        gateway_port=int(os.environ.get("GATEWAY_PORT", "8000")),
        billing_port=_addr_port("BILLING_ADDR", "127.0.0.1:50051"),
        notifier_port=_addr_port("NOTIFIER_ADDR", "127.0.0.1:50052"),
        replicas=int(os.environ.get("REPLICAS", "1")),  # processes of each service
    )
    try:
        stack.migrate()
        asyncio.run(stack.start_in_order())
    except (TimeoutError, RuntimeError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        stack.stop()
        if sink:
            sink.stop()
        return 1
    env_secrets = "STRIPE_WEBHOOK_SECRET" in os.environ or "RAZORPAY_WEBHOOK_SECRET" in os.environ
    print(
        "\nBoxCostPro payments is running:\n"
        f"  webhook gateway  {stack.gateway_url}  (POST /webhooks/stripe, /webhooks/razorpay; GET /readyz)\n"
        f"  billing gRPC     {', '.join(stack.addrs('billing'))}\n"
        f"  notifier gRPC    {', '.join(stack.addrs('notifier'))}\n"
        + (f"  replicas         {stack.replicas} processes of each service; the gateways share the port\n"
           if stack.replicas > 1 else "")
        + (f"  mail sink        127.0.0.1:{sink.port}: every email is saved under .local/mail/ as an .eml file\n"
           if sink else f"  SMTP             {os.environ['SMTP_HOST']}\n")
        + f"  database         {_redact(env['DATABASE_URL'])}\n"
        + ("" if env_secrets else
           "  webhook secrets  local development defaults (set STRIPE_WEBHOOK_SECRET / RAZORPAY_WEBHOOK_SECRET)\n")
        + "Try: make trigger FLOW=stripe-payment    Stop: Ctrl-C\n",
        flush=True,
    )
    stopped = asyncio.Event()

    async def wait_for_signal() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        watcher = asyncio.create_task(_watch(stack, stopped))
        await stopped.wait()
        watcher.cancel()

    asyncio.run(wait_for_signal())
    codes = stack.stop()
    if sink:
        sink.stop()
    print(f"stopped: {codes}", flush=True)
    return 0 if all(c == 0 for c in codes.values()) else 1


async def _watch(stack: Stack, stopped: asyncio.Event) -> None:
    """Stop everything if one service dies."""
    while not stopped.is_set():
        for service in stack.services:
            if service.process and service.process.poll() is not None:
                print(f"devstack: {service.name} exited with {service.process.returncode}", file=sys.stderr)
                stopped.set()
        await asyncio.sleep(0.5)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}@{host}"
    return url


def main() -> int:
    parser = argparse.ArgumentParser(prog="devstack")
    parser.add_argument("command", choices=["run", "db", "db-stop", "bench", "fill"])
    args, rest = parser.parse_known_args()
    try:
        return _command(args.command, rest)
    except LocalPostgresError as exc:
        print(f"devstack: {exc}\n"
              "devstack: set LOCAL_PG_PORT to a free port for the project-local PostgreSQL, or DATABASE_URL to "
              "a server of your own", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a service that could not migrate or start: its log lines are above
        print(f"devstack: {exc}", file=sys.stderr)
        return 1


def _command(command: str, rest: list[str]) -> int:
    if command == "run":
        return run()
    if command == "db":
        print(database_url())
        return 0
    if command == "db-stop":
        local_postgres().stop()
        return 0
    if command == "fill":
        from devstack.fill import main as fill_main

        return fill_main(rest)
    from devstack.bench import main as bench_main

    return bench_main(rest)


if __name__ == "__main__":
    sys.exit(main())
