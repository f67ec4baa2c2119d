"""Which webhook event types a Stripe endpoint lacks, and what each costs; which it sends in vain."""

from __future__ import annotations

from billing.domain.setup_check import STRIPE_LOSSES, STRIPE_NEEDED, check_stripe_endpoint

URL = "https://pay.example.com/webhooks/stripe"


def endpoint(events, status="enabled", url=URL, **extra):
    return {"id": "we_1", "url": url, "status": status, "enabled_events": events, "api_version": "2024-06-20",
            **extra}


def test_an_endpoint_sending_every_needed_type_is_complete_and_one_sending_all_is_too():
    assert check_stripe_endpoint([endpoint(list(STRIPE_NEEDED))], URL).complete
    assert check_stripe_endpoint([endpoint(["*"])], URL).complete


def test_missing_types_are_named_with_what_their_absence_costs_and_extra_ones_as_ignored():
    sent = [t for t in STRIPE_NEEDED if t not in ("charge.succeeded", "charge.dispute.closed")] + ["customer.created"]
    report = check_stripe_endpoint([endpoint(sent)], URL)
    assert not report.complete
    assert dict(report.missing) == {"charge.succeeded": STRIPE_LOSSES["charge.succeeded"],
                                    "charge.dispute.closed": None}
    assert report.ignored == ("customer.created",) and report.api_version == "2024-06-20"


def test_no_endpoint_for_the_url_or_a_disabled_one_is_incomplete():
    assert check_stripe_endpoint([endpoint(["*"], url="https://other.example.com/hook")], URL).endpoint_id is None
    disabled = check_stripe_endpoint([endpoint(["*"], status="disabled")], URL)
    assert (disabled.endpoint_id, disabled.enabled, disabled.complete) == ("we_1", False, False)
    # Of two for one URL, the enabled one is the one reported.
    both = check_stripe_endpoint([endpoint(["*"], status="disabled"), endpoint(["*"], id="we_2")], URL)
    assert both.endpoint_id == "we_2" and both.complete
