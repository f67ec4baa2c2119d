"""Gateway settings from the environment: defaults, and refusals that name the variable."""

from __future__ import annotations

import pytest
from gateway.config import Settings
from servicekit.env import ConfigError

BASE = {"STRIPE_WEBHOOK_SECRET": "whsec_a,whsec_b", "GRPC_PLAINTEXT": "true"}


def test_defaults_are_the_documented_ones():
    s = Settings.from_env(BASE)
    assert (s.port, s.billing_addr, s.tolerance_seconds, s.max_body_bytes, s.body_timeout_seconds) == (
        8000, "127.0.0.1:50051", 300, 1024 * 1024, 10.0)
    assert [secret.value for secret in s.stripe_webhook_secrets] == ["whsec_a", "whsec_b"]
    assert s.metrics_port == 0  # off unless METRICS_PORT names a port of its own
    assert Settings.from_env({**BASE, "METRICS_PORT": "9102"}).metrics_port == 9102
    assert (s.billing_timeout_seconds, s.billing_queue_max_bytes) == (10.0, 64 * 1024 * 1024)
    assert Settings.from_env({**BASE, "BILLING_QUEUE_MAX_BYTES": "1000000"}).billing_queue_max_bytes == 1_000_000


def test_a_body_limit_no_grpc_message_to_billing_could_carry_is_refused():
    largest = 32 * 1024 * 1024
    assert Settings.from_env({**BASE, "WEBHOOK_MAX_BODY_BYTES": str(largest)}).max_body_bytes == largest
    with pytest.raises(ConfigError, match="WEBHOOK_MAX_BODY_BYTES"):
        Settings.from_env({**BASE, "WEBHOOK_MAX_BODY_BYTES": str(64 * 1024 * 1024)})


@pytest.mark.parametrize("name", ["WEBHOOK_BODY_TIMEOUT_SECONDS", "WEBHOOK_TOLERANCE_SECONDS", "GATEWAY_PORT",
                                  "BILLING_QUEUE_MAX_BYTES"])
def test_a_malformed_number_names_its_variable(name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: "soon"})


def test_no_webhook_secret_at_all_is_refused():
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env({"GRPC_PLAINTEXT": "true"})
