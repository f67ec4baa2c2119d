"""Which SMTP failures are worth retrying: connection trouble and 4xx yes, 5xx no, our own auth yes."""

from __future__ import annotations

import aiosmtplib
import pytest
from notifier.adapters.smtp import _classify
from notifier.domain.ports import PermanentSendError, TransientSendError


@pytest.mark.parametrize(
    ("error", "kind"),
    [(aiosmtplib.SMTPDataError(451, "4.3.0 busy"), TransientSendError),
     (aiosmtplib.SMTPResponseException(421, "closing"), TransientSendError),
     (aiosmtplib.SMTPDataError(554, "5.7.1 rejected"), PermanentSendError),
     (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.c")]),
      PermanentSendError),
     (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), TransientSendError),
     (aiosmtplib.SMTPConnectError("refused"), TransientSendError),
     (aiosmtplib.SMTPServerDisconnected("gone"), TransientSendError),
     (aiosmtplib.SMTPTimeoutError("slow"), TransientSendError),
     (ConnectionRefusedError(), TransientSendError)],
)
def test_smtp_errors_are_classified(error, kind):
    assert isinstance(_classify(error), kind)


def test_permanent_error_keeps_the_server_reply():
    assert str(_classify(aiosmtplib.SMTPDataError(550, "5.1.1 Mailbox does not exist"))) == (
        "550 5.1.1 Mailbox does not exist")
