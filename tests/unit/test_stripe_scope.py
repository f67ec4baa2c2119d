"""Stripe events of the other mode, or of connected accounts billing does not serve, are kept and ignored,
with the reason, and never touch money."""

from __future__ import annotations

import pytest
from billing.config import Settings
from billing.domain.events import Outcome
from billing.domain.ingest import IngestEvents
from billing.domain.scope import StripeScope
from servicekit.env import ConfigError
from trigger.events import StripeScenario

from tests.fakes import InMemoryEventStore
from tests.support import incoming

LIVE_ONLY = StripeScope(livemode=True)


def payment(**fields):
    event = StripeScenario().event("payment_intent.succeeded")
    event.update(fields)
    return incoming("stripe", event)


@pytest.mark.parametrize(("scope", "fields", "reason"), [
    (LIVE_ONLY, {"livemode": False}, "a test-mode event, and billing takes live-mode events only"),
    (StripeScope(livemode=False), {"livemode": True}, "a live-mode event, and billing takes test-mode events only"),
    (LIVE_ONLY, {"livemode": None}, "the event does not say whether it is live or test mode"),
    (StripeScope(), {"account": "acct_other"},
     "an event of connected account acct_other, which billing is not configured to handle"),
    (StripeScope(connected_accounts=frozenset({"acct_ours"})), {"account": "acct_other"},
     "an event of connected account acct_other, which billing is not configured to handle"),
])
async def test_an_event_out_of_scope_is_kept_ignored_with_its_reason_and_changes_no_money(scope, fields, reason):
    store = InMemoryEventStore()
    event = payment(**fields)
    [result] = await IngestEvents(store, stripe_scope=scope).execute([event])
    assert (result.outcome, result.error) == (Outcome.IGNORED, reason)
    assert store.events[event.key].status is Outcome.IGNORED and store.events[event.key].error == reason
    assert store.transactions == {} and store.outbox == {}


@pytest.mark.parametrize(("scope", "fields"), [
    (LIVE_ONLY, {"livemode": True}), (StripeScope(), {"livemode": False}), (StripeScope(), {"livemode": True}),
    (StripeScope(connected_accounts=frozenset({"acct_ours"})), {"account": "acct_ours"}),
    (StripeScope(connected_accounts=None), {"account": "acct_any"}),
])
async def test_an_event_in_scope_is_applied(scope, fields):
    store = InMemoryEventStore()
    [result] = await IngestEvents(store, stripe_scope=scope).execute([payment(**fields)])
    assert result.outcome is Outcome.PROCESSED and len(store.transactions) == 1


def test_scope_settings_read_from_the_environment():
    base = {"DATABASE_URL": "postgresql://x/y", "GRPC_PLAINTEXT": "true"}
    assert Settings.from_env(base).stripe_scope == StripeScope(livemode=None, connected_accounts=frozenset())
    assert Settings.from_env({**base, "STRIPE_LIVEMODE": "true", "STRIPE_CONNECT_ACCOUNTS": "acct_1, acct_2"}
                             ).stripe_scope == StripeScope(True, frozenset({"acct_1", "acct_2"}))
    assert Settings.from_env({**base, "STRIPE_CONNECT_ACCOUNTS": "*"}).stripe_scope.connected_accounts is None
    with pytest.raises(ConfigError, match="STRIPE_LIVEMODE"):
        Settings.from_env({**base, "STRIPE_LIVEMODE": "yes please"})
