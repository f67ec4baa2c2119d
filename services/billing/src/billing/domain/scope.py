"""Which Stripe events billing applies: those of the configured mode (live or test), and of Stripe Connect
only the connected accounts it is configured to serve. Others are kept, ignored, with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StripeScope:
    livemode: bool | None = None  # None: either mode
    connected_accounts: frozenset[str] | None = frozenset()  # None: every connected account; empty: none

    def reason_to_ignore(self, event: dict[str, Any]) -> str | None:
        if self.livemode is not None:
            live = event.get("livemode")
            if not isinstance(live, bool):
                return "the event does not say whether it is live or test mode"
            if live is not self.livemode:
                return (f"a {'live' if live else 'test'}-mode event, and billing takes "
                        f"{'live' if self.livemode else 'test'}-mode events only")
        account = event.get("account")
        if account and self.connected_accounts is not None and account not in self.connected_accounts:
            return f"an event of connected account {account}, which billing is not configured to handle"
        return None
