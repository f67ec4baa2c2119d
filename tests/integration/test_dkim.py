"""DKIM: what the SMTP server receives carries a signature that verifies against the published key."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from notifier.adapters.dkim import DkimKeyError, DkimSigner
from notifier.adapters.postgres import PostgresEmailLog
from notifier.adapters.smtp import SmtpSender
from notifier.domain.accept import AcceptEmail, EmailFactory, InlineEmails
from notifier.domain.contents import EmailKind
from notifier.domain.deliver import DeliverEmails, RetryPolicy
from notifier.domain.model import EmailStatus
from notifier.domain.samples import sample
from notifier.domain.render import Renderer
from pgkit.pool import create_pool

from tests.integration.test_notifier_delivery import deliver_until, smtp_settings


@pytest.fixture(scope="module")
def key():
    """A 2048-bit RSA key, and its DNS TXT record as <selector>._domainkey.<domain> would publish it."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def _dns(record: bytes):
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mail2026._domainkey.mail.boxcostpro.com." else None
    return lookup


async def test_each_email_the_server_receives_is_signed_and_verifies(database_url, smtp_server, key, tmp_path):
    pem, record = key
    (tmp_path / "dkim.pem").write_bytes(pem)
    signer = DkimSigner.from_file("mail.boxcostpro.com", "mail2026", str(tmp_path / "dkim.pem"))
    pool = await create_pool(database_url, min_size=1, max_size=2, application_name="dkim-test")
    sender = SmtpSender(smtp_settings(smtp_server), connections=1, dkim=signer)
    try:
        email_log = PostgresEmailLog(pool)
        accept = AcceptEmail(email_log, InlineEmails(EmailFactory(Renderer(), "boxcostpro.com")))
        deliver = DeliverEmails(email_log, sender, RetryPolicy(), clock=lambda: datetime.now(UTC))
        request = replace(sample(EmailKind.PAYMENT_RECEIVED), to_name="Aşha Rāo")  # encoded-word headers too
        record_, _ = await accept.execute("k-dkim", request)
        await deliver_until(deliver, email_log, record_.id, EmailStatus.SENT)
    finally:
        await sender.close()
        await pool.close()
    [received] = smtp_server.handler.raw
    assert received.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert b" d=mail.boxcostpro.com;" in received.split(b"\r\n\r\n")[0]
    assert dkim.verify(received, dnsfunc=_dns(record))
    # The signature covers what a forger would change: the recipient, the subject, the body.
    assert not dkim.verify(received.replace(b"Payment received", b"Payment refunded"), dnsfunc=_dns(record))
    assert not dkim.verify(received.replace(b"asha@example.com", b"eve@example.com"), dnsfunc=_dns(record))


def test_a_key_that_cannot_sign_stops_the_start_with_the_reason(tmp_path):
    (tmp_path / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyError, match="DKIM_PRIVATE_KEY_FILE"):
        DkimSigner.from_file("mail.boxcostpro.com", "mail2026", str(tmp_path / "bad.pem"))
    with pytest.raises(DkimKeyError, match="No such file"):
        DkimSigner.from_file("mail.boxcostpro.com", "mail2026", str(tmp_path / "missing.pem"))
