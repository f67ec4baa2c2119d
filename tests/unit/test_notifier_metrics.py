"""The notifier's metrics count delivery results by kind and status, and time SMTP sends by result."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from notifier.api.metrics import CountingLog, TimedSender
from notifier.domain.ports import DeliveryResult, OutgoingMessage, PermanentSendError
from notifier.domain.model import EmailStatus
from prometheus_client import REGISTRY


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class RecordingLog:
    def __init__(self):
        self.recorded = []

    async def record_outcomes(self, outcomes):
        self.recorded.extend(outcomes)


class RefusingSender:
    async def send(self, message):
        raise PermanentSendError("550 no such user")


async def test_outcomes_are_recorded_then_counted_by_kind_and_status():
    inner = RecordingLog()
    before = sample("notifier_emails_total", email_type="payment_failed", status="retrying")
    await CountingLog(inner).record_outcomes([DeliveryResult("id-1", datetime.now(UTC), EmailStatus.RETRYING, "451", email_type="payment_failed")])
    assert len(inner.recorded) == 1
    assert sample("notifier_emails_total", email_type="payment_failed", status="retrying") == before + 1


async def test_an_email_given_back_unsent_is_recorded_but_not_counted_as_a_delivery():
    inner = RecordingLog()
    before = sample("notifier_emails_total", email_type="payment_failed", status="queued")
    await CountingLog(inner).record_outcomes([DeliveryResult("id-2", datetime.now(UTC), EmailStatus.QUEUED, email_type="payment_failed",
                                                      attempted=False)])
    assert len(inner.recorded) == 1
    assert sample("notifier_emails_total", email_type="payment_failed", status="queued") == before


async def test_smtp_sends_are_timed_by_result():
    before = sample("notifier_smtp_send_seconds_count", result="permanent_error")
    with pytest.raises(PermanentSendError):
        await TimedSender(RefusingSender()).send(OutgoingMessage("<m@x>", "a@b.co", "", "", "s", "<p>", "p"))
    assert sample("notifier_smtp_send_seconds_count", result="permanent_error") == before + 1
