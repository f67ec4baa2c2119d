"""Commands that only work on the database or a provider's API (migrations, retention, recovery, the set-up
check) read no gRPC TLS or mail settings: their pods hold no certificate, key or mail password. Serving
still refuses to start without them."""

from __future__ import annotations

import pytest
from billing.__main__ import main as billing_main
from billing.config import Settings as BillingSettings
from notifier.config import Settings as NotifierSettings
from servicekit.env import ConfigError

# What a job's pod sees: the shared config names TLS files that are not mounted there, and no SMTP host.
JOB_ENV = {"DATABASE_URL": "postgresql://x@localhost/x", "GRPC_PLAINTEXT": "",
           "GRPC_TLS_CERT_FILE": "/absent/tls.crt", "GRPC_TLS_KEY_FILE": "/absent/tls.key",
           "GRPC_TLS_CA_FILE": "/absent/ca.crt", "SMTP_HOST": "", "SMTP_PASSWORD": "hunter2"}


def test_billing_jobs_read_no_tls_settings_and_serving_still_needs_them():
    assert BillingSettings.from_env(JOB_ENV, serving=False).grpc_tls is None
    with pytest.raises(ConfigError, match="GRPC_TLS_CERT_FILE: no file at /absent/tls.crt"):
        BillingSettings.from_env(JOB_ENV)


def test_notifier_jobs_read_no_tls_or_mail_settings_and_serving_still_needs_them():
    settings = NotifierSettings.from_env(JOB_ENV, serving=False)
    assert (settings.grpc_tls, settings.smtp_host, settings.smtp_password) == (None, None, None)
    with pytest.raises(ConfigError, match="GRPC_TLS_CERT_FILE"):
        NotifierSettings.from_env({**JOB_ENV, "SMTP_HOST": "smtp.example.com"})
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        NotifierSettings.from_env({**JOB_ENV, "GRPC_PLAINTEXT": "true", "GRPC_TLS_CERT_FILE": "",
                                   "GRPC_TLS_KEY_FILE": "", "GRPC_TLS_CA_FILE": ""})


@pytest.mark.parametrize("command, missing", [
    (["recover-stripe-events", "--since", "72h"], "STRIPE_API_KEY is required"),
    (["recover-razorpay-events", "--since", "48h"], "RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET are required"),
    (["check-setup", "--url", "https://pay.example.com/webhooks/stripe"], "STRIPE_API_KEY is required"),
])
def test_billing_recovery_and_set_up_check_ask_for_their_provider_keys_not_for_certificates(
        command, missing, monkeypatch, capsys):
    for name, value in JOB_ENV.items():
        monkeypatch.setenv(name, value)
    assert billing_main(["billing", *command]) == 2
    err = capsys.readouterr().err
    assert missing in err and "GRPC" not in err
