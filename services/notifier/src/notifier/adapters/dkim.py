"""DKIM signatures on outgoing mail (RFC 6376), made with dkimpy: receiving servers check each one against
the public key published in DNS at <selector>._domainkey.<domain>, so mail from the tenant-facing sender
passes DMARC and is not taken for a forgery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import dkim
from servicekit.env import ConfigError

# The headers a relay must not change; relaxed canonicalization tolerates the whitespace and folding that
# relays do change.
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
                  b"reply-to", b"auto-submitted"]


class DkimKeyError(ConfigError):
    """The private key cannot sign."""


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    private_key: bytes  # PEM

    @classmethod
    def from_file(cls, domain: str, selector: str, key_file: str) -> DkimSigner:
        """Read the key and sign a sample with it: a key that cannot sign stops the start, not each email."""
        try:
            signer = cls(domain, selector, Path(key_file).read_bytes())
            signer.sign(b"From: x@example.com\r\nSubject: check\r\n\r\nx\r\n")
        except (OSError, ValueError, dkim.DKIMException) as exc:  # a malformed key: binascii or ASN.1 errors
            raise DkimKeyError(f"DKIM_PRIVATE_KEY_FILE {key_file}: {exc}") from None
        return signer

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header first."""
        signature = dkim.sign(message, self.selector.encode(), self.domain.encode(), self.private_key,
                              canonicalize=(b"relaxed", b"relaxed"), include_headers=SIGNED_HEADERS)
        return signature + message

    async def sign_off_loop(self, message: bytes) -> bytes:
        """dkimpy's RSA is pure Python (about 9 ms a signature on one core): signed on a worker thread, so
        the event loop goes on answering between signatures."""
        return await asyncio.get_running_loop().run_in_executor(None, self.sign, message)
