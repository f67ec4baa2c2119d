"""Operator command line over billing's gRPC API (BILLING_ADDR, default 127.0.0.1:50051). With GRPC_TLS_CERT_FILE,
GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE set, as in billing's own pod, it speaks mutual TLS as the services do;
without them, plaintext (make run).

  python -m billing.cli failed                      # failed webhook events, newest first
  python -m billing.cli events [--status S|dead_letter] [--type T] [--provider stripe|razorpay]
  python -m billing.cli event stripe evt_123        # one event, with its error and payload
  python -m billing.cli replay stripe evt_123       # apply a failed event again
  python -m billing.cli replay --all-failed
  python -m billing.cli replay-selected --reason WHY [--dry-run] [--provider P] [--type T] [--tenant ID]
      [--status processed|ignored|failed ...] [--since ISO] [--until ISO] [--event ID ...] [--limit N]
                                                    # apply stored events again, any status (audited)
  python -m billing.cli txn TENANT_ID TRANSACTION_ID
  python -m billing.cli refused-emails [--retry]    # emails the notifier refused; --retry sends them again
  python -m billing.cli unattributed                # payments received that no tenant owns
  python -m billing.cli assign-tenant TRANSACTION_ID TENANT_ID [--user USER_ID]   # give one its tenant
  python -m billing.cli unattributed-subscriptions  # subscriptions that no tenant owns
  python -m billing.cli assign-subscription-tenant stripe sub_123 TENANT_ID [--user USER_ID]
  python -m billing.cli erase-customer --email ADDRESS --reason WHY   # a customer's personal data, from
                                                    # billing and the notifier's log (NOTIFIER_ADDR); audited
  python -m billing.cli tenant-profile TENANT_ID     # how the tenant's emails name and brand it
  python -m billing.cli set-tenant-profile TENANT_ID --name NAME [--reply-to A] [--support-email A]
      [--support-url URL] [--brand-color #RRGGBB] [--logo-url URL] [--locale en-IN] [--time-zone Asia/Kolkata]
      [--portal-url URL] [--disable KIND ...]       # replaces the whole profile: unnamed fields are emptied
  python -m billing.cli plans [--provider stripe|razorpay]   # the plan catalog
  python -m billing.cli set-plan stripe price_123 --name "Pro" [--interval month] [--amount 249900 --currency INR]
                                                    # the name subscription emails give the plan
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import razorpay
import stripe
from boxcost.billing.v1 import billing_pb2, billing_pb2_grpc
from boxcost.notifier.v1 import notifier_pb2, notifier_pb2_grpc
from google.protobuf.json_format import MessageToDict
from servicekit.env import env_secrets
from servicekit.operator import run_command
from servicekit.tls import GrpcTls

from billing.domain.api_types import MAX_REFUSED, MAX_REPLAYED, MAX_UNATTRIBUTED

PROVIDERS = {"stripe": billing_pb2.PROVIDER_STRIPE, "razorpay": billing_pb2.PROVIDER_RAZORPAY, None: 0}


def _provider(value: int) -> str:
    """stripe or razorpay, as the commands take it, for PROVIDER_STRIPE or PROVIDER_RAZORPAY."""
    return billing_pb2.Provider.Name(value).removeprefix("PROVIDER_").lower()


def _print(message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _signature_valid(provider: str, event: billing_pb2.StoredEvent) -> bool:
    """The kept signature checked again against the kept body, with the providers' own SDKs. Stripe's
    timestamp is not checked for age: the event was received long ago."""
    secrets = env_secrets(os.environ, f"{provider.upper()}_WEBHOOK_SECRET")
    if not secrets:
        raise SystemExit(f"--verify needs {provider.upper()}_WEBHOOK_SECRET")
    for secret in secrets:  # any of the secrets in rotation
        try:
            if provider == "stripe":
                stripe.WebhookSignature.verify_header(event.body, event.headers.get("stripe-signature"),
                                                      secret.value)
            else:
                razorpay.Utility(None).verify_webhook_signature(
                    event.body.decode(), event.headers.get("x-razorpay-signature", ""), secret.value)
            return bool(event.body)
        except (stripe.SignatureVerificationError, razorpay.errors.SignatureVerificationError, UnicodeDecodeError):
            continue
    return False


async def run(args: argparse.Namespace, tls: GrpcTls) -> int:
    async with tls.channel(os.environ.get("BILLING_ADDR", "127.0.0.1:50051")) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        timeout = 30
        if args.command in ("failed", "events"):
            status = "failed" if args.command == "failed" else args.status
            token = ""
            while True:
                page = await stub.ListWebhookEvents(billing_pb2.ListWebhookEventsRequest(
                    status=status or "", event_type=args.type or "", provider=PROVIDERS[args.provider],
                    page_size=100, page_token=token), timeout=timeout)
                for e in page.events:
                    shown = "dead" if e.dead_letter else e.status
                    print(f"{e.received_at.ToJsonString()}  {_provider(e.provider):<8} "
                          f"{e.event_id:<32} {e.event_type:<36} {shown:<9} x{e.attempts} {e.error}")
                token = page.next_page_token
                if not token or not args.all_pages:
                    break
        elif args.command == "event":
            event = (await stub.GetWebhookEvent(billing_pb2.GetWebhookEventRequest(
                provider=PROVIDERS[args.provider_name], event_id=args.event_id), timeout=timeout)).event
            if args.body:
                sys.stdout.buffer.write(event.body)  # the exact bytes, to check or resend
                return 0 if event.body else 1
            shown = {"event": {**MessageToDict(event, preserving_proto_field_name=True),
                               "body": event.body.decode(errors="replace")}}
            if args.verify:
                shown["signature_valid"] = _signature_valid(args.provider_name, event)
            print(json.dumps(shown, indent=2))
            return 0 if shown.get("signature_valid", True) else 1
        elif args.command == "replay":
            request = (billing_pb2.ReplayWebhookEventsRequest(all_failed=True) if args.all_failed else
                       billing_pb2.ReplayWebhookEventsRequest(provider=PROVIDERS[args.provider_name],
                                                              event_id=args.event_id))
            replayed, more = 0, ""
            while True:
                reply = await stub.ReplayWebhookEvents(request, timeout=120)
                for r in reply.results:
                    print(f"{r.event_id:<32} {billing_pb2.IngestStatus.Name(r.status)[14:].lower():<10} {r.error}")
                replayed += len(reply.results)
                if len(reply.results) < MAX_REPLAYED:
                    break
                # A full share: those applied now leave the failed ones, so another call reaches further,
                # unless every one failed again and would come first once more.
                if all(r.status == billing_pb2.INGEST_STATUS_FAILED for r in reply.results):
                    more = " (the earliest received failed again; there are more behind them)"
                    break
            print(f"{replayed} replayed{more}")
        elif args.command == "replay-selected":
            selection = billing_pb2.EventSelection(
                provider=PROVIDERS[args.provider] if args.provider else billing_pb2.PROVIDER_UNSPECIFIED,
                event_ids=args.event, event_type=args.type or "", tenant_id=args.tenant or "", statuses=args.status,
                limit=args.limit)
            for name, value in (("received_after", args.since), ("received_before", args.until)):
                if value:
                    getattr(selection, name).FromJsonString(value)
            reply = await stub.ReplayWebhookEvents(billing_pb2.ReplayWebhookEventsRequest(
                selection=selection, dry_run=args.dry_run, reason=args.reason), timeout=300)
            for r in reply.results:
                print(f"{r.event_id:<32} {billing_pb2.IngestStatus.Name(r.status)[14:].lower():<10} {r.error}")
            verb = "would be replayed" if args.dry_run else "replayed"
            print(f"{len(reply.results)} {verb} (replay {reply.replay_id})")
            if args.dry_run:
                print(f"transactions that would change: {', '.join(reply.changed_transaction_ids) or 'none'}")
                print(f"subscriptions that would change: {', '.join(reply.changed_subscription_ids) or 'none'}")
                print(f"emails that would be asked for: {', '.join(reply.email_kinds) or 'none'}")
        elif args.command == "refused-emails":
            count = 0
            while True:  # queued a share at a time: those queued are no longer refused
                reply = await stub.RetryRefusedEmails(billing_pb2.RetryRefusedEmailsRequest(
                    dry_run=not args.retry, limit=MAX_REFUSED), timeout=timeout)
                for e in reply.emails:
                    print(f"{e.created_at.ToJsonString()}  {e.id}  {e.kind:<24} {e.idempotency_key}  {e.refusal}")
                count += len(reply.emails)
                if not args.retry or len(reply.emails) < MAX_REFUSED:
                    break
            more = " (the oldest; there may be more)" if not args.retry and count == MAX_REFUSED else ""
            print(f"{count} {'queued again' if args.retry else 'refused'}{more}")
        elif args.command == "unattributed":
            reply = await stub.ListUnattributedTransactions(billing_pb2.ListUnattributedTransactionsRequest(
                limit=MAX_UNATTRIBUTED), timeout=timeout)
            for t in reply.transactions:
                ids = " ".join(i for i in (t.stripe_payment_intent_id, t.stripe_invoice_id, t.stripe_charge_id,
                                           t.stripe_subscription_id, t.razorpay_order_id, t.razorpay_payment_id,
                                           t.razorpay_subscription_id) if i)
                print(f"{t.paid_at.ToJsonString()}  {t.id}  {_provider(t.provider):<8} "
                      f"{t.amount.amount_minor:>12} {t.amount.currency}  {t.status:<18} {ids}")
            more = " (the earliest paid; there may be more)" if len(reply.transactions) == MAX_UNATTRIBUTED else ""
            print(f"{len(reply.transactions)} without a tenant{more}")
        elif args.command == "unattributed-subscriptions":
            reply = await stub.ListUnattributedSubscriptions(billing_pb2.ListUnattributedSubscriptionsRequest(
                limit=MAX_UNATTRIBUTED), timeout=timeout)
            for s in reply.subscriptions:
                print(f"{s.created_at.ToJsonString()}  {s.id}  {_provider(s.provider):<8} {s.status:<10} "
                      f"{s.stripe_subscription_id or s.razorpay_subscription_id}  {s.plan}")
            more = " (the earliest; there may be more)" if len(reply.subscriptions) == MAX_UNATTRIBUTED else ""
            print(f"{len(reply.subscriptions)} without a tenant{more}")
        elif args.command == "assign-tenant":
            _print(await stub.AssignTransactionTenant(billing_pb2.AssignTransactionTenantRequest(
                transaction_id=args.transaction_id, tenant_id=args.tenant_id, user_id=args.user or ""),
                timeout=timeout))
        elif args.command == "assign-subscription-tenant":
            _print(await stub.AssignSubscriptionTenant(billing_pb2.AssignSubscriptionTenantRequest(
                provider=PROVIDERS[args.provider_name], subscription_id=args.subscription_id,
                tenant_id=args.tenant_id, user_id=args.user or ""), timeout=timeout))
        elif args.command == "txn":
            _print(await stub.GetTransaction(billing_pb2.GetTransactionRequest(
                tenant_id=args.tenant_id, id=args.transaction_id), timeout=timeout))
        elif args.command == "erase-customer":
            await _erase(stub, args, tls)
        elif args.command == "plans":
            _print(await stub.ListPlans(billing_pb2.ListPlansRequest(provider=PROVIDERS[args.provider], limit=1000),
                                        timeout=timeout))
        elif args.command == "set-plan":
            amount = (billing_pb2.Money(amount_minor=args.amount, currency=args.currency or "")
                      if args.amount is not None else None)
            _print(await stub.SetPlan(billing_pb2.SetPlanRequest(plan=billing_pb2.Plan(
                provider=PROVIDERS[args.provider_name], plan_id=args.plan_id, name=args.name,
                interval=args.interval, interval_count=args.interval_count, amount=amount)), timeout=timeout))
        elif args.command == "tenant-profile":
            _print(await stub.GetTenantProfile(billing_pb2.GetTenantProfileRequest(tenant_id=args.tenant_id),
                                               timeout=timeout))
        elif args.command == "set-tenant-profile":
            _print(await stub.SetTenantProfile(billing_pb2.SetTenantProfileRequest(
                tenant_id=args.tenant_id, profile=billing_pb2.TenantProfile(
                    display_name=args.name, support_email=args.support_email, support_url=args.support_url,
                    reply_to=args.reply_to, brand_color=args.brand_color, logo_url=args.logo_url, locale=args.locale,
                    time_zone=args.time_zone, portal_url_template=args.portal_url, disabled_emails=args.disable)),
                timeout=timeout))
    return 0


# Erasure reads every stored event once: minutes on a large database, not seconds.
ERASE_TIMEOUT = 900


async def _erase(stub: billing_pb2_grpc.BillingServiceStub, args: argparse.Namespace, tls: GrpcTls) -> None:
    """Billing's data, then the notifier's email log. Run again after a failure: what was erased already is
    not found again, and each run is recorded."""
    _print(await stub.EraseCustomer(billing_pb2.EraseCustomerRequest(email=args.email, reason=args.reason),
                                    timeout=ERASE_TIMEOUT))
    async with tls.channel(os.environ.get("NOTIFIER_ADDR", "127.0.0.1:50052")) as channel:
        _print(await notifier_pb2_grpc.NotifierServiceStub(channel).EraseRecipient(
            notifier_pb2.EraseRecipientRequest(email=args.email, reason=args.reason), timeout=ERASE_TIMEOUT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billing.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("failed", "events"):
        p = sub.add_parser(name)
        p.add_argument("--status")
        p.add_argument("--type")
        p.add_argument("--provider", choices=["stripe", "razorpay"])
        p.add_argument("--all-pages", action="store_true")
    p = sub.add_parser("event")
    p.add_argument("provider_name", choices=["stripe", "razorpay"])
    p.add_argument("event_id")
    p.add_argument("--body", action="store_true", help="write only the body exactly as it was signed")
    p.add_argument("--verify", action="store_true",
                   help="check the kept signature against the body, with STRIPE_WEBHOOK_SECRET or "
                        "RAZORPAY_WEBHOOK_SECRET (exit 1 when it does not match)")
    p = sub.add_parser("replay")
    p.add_argument("provider_name", nargs="?", choices=["stripe", "razorpay"])
    p.add_argument("event_id", nargs="?")
    p.add_argument("--all-failed", action="store_true")
    p = sub.add_parser("replay-selected")
    p.add_argument("--reason", required=True, help="why: kept with the replay, with who asked")
    p.add_argument("--dry-run", action="store_true", help="say what would change, changing nothing")
    p.add_argument("--provider", choices=["stripe", "razorpay"])
    p.add_argument("--type")
    p.add_argument("--tenant")
    p.add_argument("--status", action="append", default=[], choices=["processed", "ignored", "failed"])
    p.add_argument("--since", help="received at or after (RFC 3339)")
    p.add_argument("--until", help="received before (RFC 3339)")
    p.add_argument("--event", action="append", default=[], help="an event id (repeatable)")
    p.add_argument("--limit", type=int, default=0, help=f"at most {MAX_REPLAYED}, the earliest received first")
    p = sub.add_parser("refused-emails")
    p.add_argument("--retry", action="store_true")
    sub.add_parser("unattributed")
    sub.add_parser("unattributed-subscriptions")
    p = sub.add_parser("assign-tenant")
    p.add_argument("transaction_id")
    p.add_argument("tenant_id")
    p.add_argument("--user")
    p = sub.add_parser("assign-subscription-tenant")
    p.add_argument("provider_name", choices=["stripe", "razorpay"])
    p.add_argument("subscription_id")
    p.add_argument("tenant_id")
    p.add_argument("--user")
    p = sub.add_parser("txn")
    p.add_argument("tenant_id")
    p.add_argument("transaction_id")
    p = sub.add_parser("erase-customer", help="erase a customer's personal data from billing and the email log")
    p.add_argument("--email", required=True)
    p.add_argument("--reason", required=True, help="why (a request or ticket reference): kept with the erasure")
    p = sub.add_parser("plans", help="the plan catalog: the names subscription emails give plans")
    p.add_argument("--provider", choices=["stripe", "razorpay"])
    p = sub.add_parser("set-plan", help="the name customers know a provider's plan by")
    p.add_argument("provider_name", choices=["stripe", "razorpay"])
    p.add_argument("plan_id", help="a Stripe price id, a Razorpay plan id")
    p.add_argument("--name", required=True)
    p.add_argument("--interval", default="", choices=["", "day", "week", "month", "year"])
    p.add_argument("--interval-count", type=int, default=0)
    p.add_argument("--amount", type=int, help="minor units each interval (paise, cents)")
    p.add_argument("--currency")
    p = sub.add_parser("tenant-profile", help="a tenant's profile: how its emails name and brand it")
    p.add_argument("tenant_id")
    p = sub.add_parser("set-tenant-profile", help="set a tenant's profile whole (unnamed fields are emptied)")
    p.add_argument("tenant_id")
    p.add_argument("--name", required=True, help="the name its customers know it by")
    for option in ("reply-to", "support-email", "support-url", "brand-color", "logo-url", "locale", "time-zone"):
        p.add_argument(f"--{option}", default="")
    p.add_argument("--portal-url", default="", help="its billing portal, https; may hold {user_id}")
    p.add_argument("--disable", action="append", default=[], metavar="KIND",
                   help="an email kind its customers are not sent (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "replay" and not args.all_failed and not (args.provider_name and args.event_id):
        parser.error("replay needs PROVIDER EVENT_ID, or --all-failed")
    return run_command("billing.cli", "billing", lambda tls: run(args, tls))


if __name__ == "__main__":
    sys.exit(main())
