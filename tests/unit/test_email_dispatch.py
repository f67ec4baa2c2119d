"""Billing's outbox dispatcher: one call per round, refusals kept as dead, a missing notifier pauses it."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from billing.domain.dispatch import DispatchEmails, NotifierUnavailable, DispatchResult, OutboxItem


def _item(n: int) -> OutboxItem:
    return OutboxItem(id=f"id-{n}", idempotency_key=f"key-{n}", kind="payment_received", content=None, attempts=1)


@dataclass
class FakeOutbox:
    items: list[OutboxItem]
    claimed_limits: list[int] = field(default_factory=list)
    recorded: list[DispatchResult] = field(default_factory=list)

    async def claim_due(self, limit: int, lease: timedelta) -> list[OutboxItem]:
        self.claimed_limits.append(limit)
        taken, self.items = self.items[:limit], self.items[limit:]
        return taken

    async def next_due_in(self) -> float | None:
        return 0.0 if self.items else None

    async def record_outcomes(self, outcomes: list[DispatchResult]) -> None:
        self.recorded.extend(outcomes)


@dataclass
class FakeNotifier:
    refuse: set[str] = field(default_factory=set)
    down: bool = False
    calls: list[list[str]] = field(default_factory=list)

    async def send_emails(self, items):
        self.calls.append([i.idempotency_key for i in items])
        if self.down:
            raise NotifierUnavailable("UNAVAILABLE: connection refused")
        return ["INVALID_ARGUMENT: content.to.email is not an email address" if i.idempotency_key in self.refuse
                else None for i in items]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_round_hands_the_batch_over_in_one_call_and_keeps_refusals_as_dead():
    outbox, notifier = FakeOutbox([_item(n) for n in range(5)]), FakeNotifier(refuse={"key-3"})
    sent = await DispatchEmails(outbox, notifier, clock=Clock()).run_once(limit=100)
    assert sent == 5 and notifier.calls == [[f"key-{n}" for n in range(5)]]
    statuses = {o.item_id: o.status for o in outbox.recorded}
    assert statuses == {"id-0": "delivered", "id-1": "delivered", "id-2": "delivered", "id-3": "dead",
                        "id-4": "delivered"}
    assert next(o for o in outbox.recorded if o.status == "dead").error.startswith("INVALID_ARGUMENT")


async def test_an_unreachable_notifier_retries_the_batch_later_and_pauses_then_probes_with_one():
    clock = Clock()
    outbox, notifier = FakeOutbox([_item(n) for n in range(5)]), FakeNotifier(down=True)
    dispatch = DispatchEmails(outbox, notifier, clock=clock)
    assert await dispatch.run_once(limit=100) == 0
    assert {o.status for o in outbox.recorded} == {"retry"}
    assert all(o.next_attempt_at > clock.now for o in outbox.recorded)
    assert await dispatch.next_due_in() == 1.0
    outbox.items = [_item(n) for n in range(5)]  # due again
    assert await dispatch.run_once(limit=100) == 0 and len(notifier.calls) == 1  # paused: no call
    clock.now += timedelta(seconds=1)
    notifier.down = False
    assert await dispatch.run_once(limit=100) == 1  # the probe
    assert await dispatch.run_once(limit=100) == 4  # back to full rounds
    assert outbox.claimed_limits[-2:] == [1, 100]
