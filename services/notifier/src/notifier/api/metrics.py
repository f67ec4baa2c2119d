"""The notifier's Prometheus metrics: emails by kind and status, SMTP latency. Labels are bounded."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from notifier.domain.ports import DeliveryResult, EmailLog, MailSender, OutgoingMessage, PermanentSendError

EMAILS = Counter("notifier_emails_total", "Delivery attempts' results, by email kind and status "
                 "(sent, retrying, failed).", ["email_type", "status"])
SMTP_SECONDS = Histogram("notifier_smtp_send_seconds", "Time to hand one email to the SMTP server, by result.",
                         ["result"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


# The values of notifier_smtp_send_seconds' `result`.
SMTP_RESULTS = SENT, PERMANENT_ERROR, TRANSIENT_ERROR = "sent", "permanent_error", "transient_error"


class TimedSender:
    def __init__(self, inner: MailSender) -> None:
        self._inner = inner

    async def send(self, message: OutgoingMessage) -> None:
        started, result = time.perf_counter(), SENT
        try:
            await self._inner.send(message)
        except PermanentSendError:
            result = PERMANENT_ERROR
            raise
        except Exception:
            result = TRANSIENT_ERROR
            raise
        finally:
            SMTP_SECONDS.labels(result).observe(time.perf_counter() - started)


class CountingLog:
    """The email log, counting each recorded delivery outcome."""

    def __init__(self, inner: EmailLog) -> None:
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    async def record_outcomes(self, outcomes: list[DeliveryResult]) -> None:
        await self._inner.record_outcomes(outcomes)
        for outcome in outcomes:
            if outcome.attempted:  # one given back unsent is no delivery outcome
                EMAILS.labels(outcome.email_type or "unknown", outcome.status.value).inc()
