"""Helpers of the ingest rules' tests: flows ingested one event at a time, and events changed as a test needs."""

from __future__ import annotations

import itertools

from billing.domain.ingest import IngestEvents
from billing.domain.model import Transaction
from trigger.events import StripeScenario
from trigger.flows import FLOWS

from tests.fakes import InMemoryEventStore
from tests.support import incoming, state


def flow_events(name: str, tenant: str = "t1", user: str = "u1"):
    flow = FLOWS[name]
    return [incoming(flow.provider, e) for e in flow.build(tenant, user)]


async def ingest_one_by_one(events):
    store = InMemoryEventStore()
    use_case = IngestEvents(store)
    for event in events:
        await use_case.execute([event])
    return store


async def same_rows_in_every_order(events):
    """The store after `events` one by one, having checked that every other order ends in the same rows."""
    expected = await ingest_one_by_one(events)
    for order in itertools.permutations(events):
        got = await ingest_one_by_one(order)
        arrival = [e.event_type for e in order]
        assert state(got.transactions.values()) == state(expected.transactions.values()), arrival
        assert state(got.subscriptions.values()) == state(expected.subscriptions.values()), arrival
    return expected


def with_fields(event, *path):
    """The event and the object at `path` in it, to change."""
    obj = event
    for key in path:
        obj = obj[key]
    return event, obj


def uncaptured(charge_event):
    """The charge as manual capture shows it before capture: authorised, nothing taken, no receipt."""
    charge_event["data"]["object"].update(captured=False, amount_captured=0, receipt_url=None)
    return charge_event


def after_partial_capture(s: StripeScenario, captured: int, refunds: list[int], *, listed: bool = True):
    """charge.refunded for a charge of s.amount authorised and `captured` taken, as Stripe shows it: the
    rest of the authorisation released as a refund at the capture (the oldest), then each real refund.
    amount_refunded counts them all; API versions from 2022-11-15 list none."""
    event = s.event("charge.refunded")
    charge = event["data"]["object"]
    made = [{"id": f"re_release_{s.charge}", "object": "refund", "amount": s.amount - captured, "status": "succeeded",
             "reason": None, "failure_reason": None, "created": charge["created"]}]
    made += [{"id": f"re_{i}_{s.charge}", "object": "refund", "amount": amount, "status": "succeeded",
              "reason": "requested_by_customer", "failure_reason": None, "created": charge["created"] + 1 + i}
             for i, amount in enumerate(refunds)]
    total = sum(r["amount"] for r in made)
    charge.update(captured=True, amount_captured=captured, amount_refunded=total, refunded=total >= s.amount,
                  refunds={"object": "list", "data": made[::-1]} if listed else None)
    return event


def partially_captured(s: StripeScenario, captured: int):
    """The authorisation, and its capture in part (the intent, and charge.captured)."""
    authorised = uncaptured(s.event("charge.succeeded"))
    intent = s.event("payment_intent.succeeded")
    intent["data"]["object"]["amount_received"] = captured
    capture = s.event("charge.captured")
    capture["data"]["object"].update(amount_captured=captured, amount_refunded=s.amount - captured)
    return [authorised, intent, capture]


def refund_states(txn: Transaction) -> dict[str, tuple[int, str, str | None]]:
    return {r.id: (r.amount, r.state.value, r.failure_reason) for r in txn.refunds}
