"""The notifier's settings: DKIM signing is all three settings or none."""

from __future__ import annotations

import pytest
from notifier.config import Settings
from servicekit.env import ConfigError

BASE = {"DATABASE_URL": "postgresql://x@localhost/x", "SMTP_HOST": "localhost", "GRPC_PLAINTEXT": "true"}


def test_without_dkim_settings_mail_is_not_signed():
    assert Settings.from_env(BASE).dkim is None


def test_dkim_settings_are_read_together():
    settings = Settings.from_env({**BASE, "DKIM_DOMAIN": "mail.boxcostpro.com", "DKIM_SELECTOR": "mail2026",
                                  "DKIM_PRIVATE_KEY_FILE": "/etc/boxcost/dkim/key.pem"})
    assert settings.dkim == ("mail.boxcostpro.com", "mail2026", "/etc/boxcost/dkim/key.pem")


@pytest.mark.parametrize("missing", ["DKIM_DOMAIN", "DKIM_SELECTOR", "DKIM_PRIVATE_KEY_FILE"])
def test_part_of_the_dkim_settings_is_refused_naming_all_three(missing):
    given = {"DKIM_DOMAIN": "mail.boxcostpro.com", "DKIM_SELECTOR": "mail2026",
             "DKIM_PRIVATE_KEY_FILE": "/etc/boxcost/dkim/key.pem"}
    del given[missing]
    with pytest.raises(ConfigError, match="DKIM_DOMAIN, DKIM_SELECTOR, DKIM_PRIVATE_KEY_FILE"):
        Settings.from_env({**BASE, **given})
