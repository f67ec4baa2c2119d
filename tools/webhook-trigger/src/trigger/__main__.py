"""`python -m trigger`: send realistic, signed Stripe and Razorpay webhooks to a gateway.

  python -m trigger list
  python -m trigger event payment_intent.succeeded [--tenant T --user U]
  python -m trigger flow stripe-payment [--times 2 --concurrent --shuffle --stale 600]
  python -m trigger file saved.json --provider stripe

Secrets come from STRIPE_WEBHOOK_SECRET / RAZORPAY_WEBHOOK_SECRET (first of a comma-separated list),
else the local development defaults that `make run` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

from trigger.delivery import Delivery, DeliveryPlan, Response, deliver, sign
from trigger.events import RazorpayScenario, StripeScenario
from trigger.flows import FLOWS, single_event

DEV_SECRETS = {"stripe": "whsec_boxcostpro_local_dev", "razorpay": "rzp_boxcostpro_local_dev"}
ENV_SECRETS = {"stripe": "STRIPE_WEBHOOK_SECRET", "razorpay": "RAZORPAY_WEBHOOK_SECRET"}


def secret_for(provider: str) -> str:
    configured = os.environ.get(ENV_SECRETS[provider], "").split(",")[0].strip()
    return configured or DEV_SECRETS[provider]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trigger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "event", "flow", "file"])
    parser.add_argument("target", nargs="?", help="event type, flow name or payload file")
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL",
                                                        f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"))
    parser.add_argument("--tenant", default="tenant_demo")
    parser.add_argument("--user", default="user_demo")
    parser.add_argument("--times", type=int, default=1, help="deliver each event N times")
    parser.add_argument("--concurrent", action="store_true", help="send all deliveries at once")
    parser.add_argument("--shuffle", action="store_true", help="deliver in a random order")
    parser.add_argument("--seed", type=int, default=None, help="seed for --shuffle")
    parser.add_argument("--stale", type=int, default=0, metavar="SECONDS",
                        help="backdate Stripe signature timestamps by SECONDS")
    parser.add_argument("--provider", choices=["stripe", "razorpay"], help="provider of a payload file")
    parser.add_argument("--event-id", help="X-Razorpay-Event-Id for a Razorpay payload file")
    return parser


def build(args: argparse.Namespace) -> list[Delivery]:
    if args.command == "event":
        provider, event = single_event(args.target, args.tenant, args.user)
        return [sign(provider, event, secret_for(provider), age_seconds=args.stale)]
    if args.command == "flow":
        if args.target not in FLOWS:
            raise ValueError(f"unknown flow {args.target!r}; flows: {', '.join(FLOWS)}")
        flow = FLOWS[args.target]
        return [sign(flow.provider, e, secret_for(flow.provider), age_seconds=args.stale)
                for e in flow.build(args.tenant, args.user)]
    if not args.provider:
        raise ValueError("a payload file needs --provider")
    body = Path(args.target).read_bytes()
    return [sign(args.provider, body, secret_for(args.provider), age_seconds=args.stale, event_id=args.event_id)]


def _describe(response: Response) -> str:
    body = response.body
    if isinstance(body, dict) and "processing_result" in body:
        outcome = body["processing_result"].get("status")
    elif isinstance(body, dict) and "error" in body:
        outcome = body["error"].get("code")
    else:
        outcome = str(body)[:80]
    d = response.delivery
    return f"{response.status} {d.provider:<8} {d.event_type:<34} {d.event_id:<30} {outcome}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        print("Stripe events:   " + ", ".join(StripeScenario.TYPES))
        print("Razorpay events: " + ", ".join(RazorpayScenario.TYPES))
        print("Flows:")
        for name, flow in FLOWS.items():
            print(f"  {name:<22} {flow.description}")
        return 0
    if not args.target:
        print(f"trigger {args.command}: name an event type, flow or file", file=sys.stderr)
        return 2
    try:
        deliveries = build(args)
    except (ValueError, OSError) as exc:
        print(f"trigger: {exc}", file=sys.stderr)
        return 2
    plan = DeliveryPlan(times=args.times, concurrent=args.concurrent, shuffle=args.shuffle, seed=args.seed)
    try:
        responses = asyncio.run(deliver(args.url, deliveries, plan))
    except OSError as exc:
        print(f"trigger: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    for response in responses:
        print(_describe(response))
    statuses = Counter(r.status for r in responses)
    outcomes = Counter(
        r.body.get("processing_result", {}).get("status", "error") if isinstance(r.body, dict) else "error"
        for r in responses
    )
    print(f"\n{len(responses)} deliveries: " + ", ".join(f"HTTP {s} x{n}" for s, n in sorted(statuses.items()))
          + " | " + ", ".join(f"{o} x{n}" for o, n in sorted(outcomes.items())))
    if os.environ.get("TRIGGER_JSON"):
        print(json.dumps([{"status": r.status, "body": r.body} for r in responses]))
    return 0 if all(200 <= r.status < 300 for r in responses) else 1


if __name__ == "__main__":
    sys.exit(main())
