"""Operator command line over the notifier's gRPC API (NOTIFIER_ADDR, default 127.0.0.1:50052). With
GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE set, as in the notifier's own pod, it speaks
mutual TLS as the services do; without them, plaintext (make run).

  python -m notifier.cli failed TENANT_ID                        # a tenant's failed emails, with the reply
  python -m notifier.cli retry TENANT_ID EMAIL_ID [EMAIL_ID ...]  # send these failed emails again
  python -m notifier.cli retry --failed-since 2026-11-28T09:00:00Z [--tenant TENANT_ID]
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from servicekit.operator import run_command
from servicekit.timestamps import to_timestamp
from servicekit.tls import GrpcTls

from notifier.domain.operations import MAX_REQUEUED


async def run(args: argparse.Namespace, tls: GrpcTls) -> int:
    async with tls.channel(os.environ.get("NOTIFIER_ADDR", "127.0.0.1:50052")) as channel:
        stub = notifier_pb2_grpc.NotifierServiceStub(channel)
        if args.command == "failed":
            token = ""
            while True:
                page = await stub.ListEmails(notifier_pb2.ListEmailsRequest(
                    tenant_id=args.tenant_id, status=notifier_pb2.EMAIL_STATUS_FAILED, page_size=100,
                    page_token=token), timeout=30)
                for e in page.emails:
                    print(f"{e.created_at.ToJsonString()}  {e.id}  {e.email_type:<24} {e.to_email:<32} "
                          f"x{e.attempts} {e.error_message}")
                token = page.next_page_token
                if not token:
                    return 0
        request = notifier_pb2.RetryEmailsRequest(tenant_id=args.tenant_id or args.tenant or "", ids=args.email_ids)
        if args.failed_since:
            request.failed_since.CopyFrom(to_timestamp(args.failed_since))
        queued = 0
        while True:  # a time window is queued again a share at a time; the emails queued are no longer failed
            reply = await stub.RetryEmails(request, timeout=120)
            for email_id in reply.ids:
                print(email_id)
            queued += len(reply.ids)
            if not args.failed_since or len(reply.ids) < MAX_REQUEUED:
                break
        print(f"{queued} queued again")
        return 0


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("give the time with its offset, e.g. 2026-11-28T09:00:00Z")
    return moment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notifier.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("failed")
    p.add_argument("tenant_id")
    p = sub.add_parser("retry")
    p.add_argument("tenant_id", nargs="?")
    p.add_argument("email_ids", nargs="*")
    p.add_argument("--failed-since", type=_moment)
    p.add_argument("--tenant")
    args = parser.parse_args(argv)
    if args.command == "retry" and bool(args.email_ids) == bool(args.failed_since):
        parser.error("retry needs TENANT_ID EMAIL_ID..., or --failed-since TIME")
    return run_command("notifier.cli", "notifier", lambda tls: run(args, tls))


if __name__ == "__main__":
    sys.exit(main())
