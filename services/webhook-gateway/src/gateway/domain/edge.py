"""Edge protection: who the client is behind trusted proxies, which networks may call, and a limit on
failed authentications per client that never touches genuine traffic."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceNotAllowed(Exception):
    """The client's address is outside the provider's allowed networks."""


class TooManyFailures(Exception):
    """This client failed authentication too often; `retry_after` seconds until it may fail again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentications; retry after {retry_after} s")
        self.retry_after = retry_after


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> IPAddress | None:
    """The client's address. X-Forwarded-For counts only when the peer is a trusted proxy: its entries
    are read right to left (each proxy appends what it saw, across all header lines), and the first
    address outside the trusted networks is the client. Entries further left are the client's claims."""
    client = _parse_address(peer) if peer else None
    if not trusted or client is None or not _trusted(client, trusted):
        return client
    hops = [hop.strip() for line in forwarded_for for hop in line.split(",")]
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None:
            return client  # not an address, so no proxy of ours wrote it: keep the last one that did
        client = address
        if not _trusted(address, trusted):
            break
    return client


def _trusted(address: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


@lru_cache(maxsize=4096)
def _parse_address(text: str) -> IPAddress | None:
    # Cached: providers deliver from a few addresses, and parsing costs more than the rest of the check.
    if len(text) > 45 or not text.isascii():  # the longest IPv6 text form
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_networks(spec: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())


def check_allowed(address: IPAddress | None, allowed: Sequence[Network]) -> None:
    if not allowed:
        return
    if address is None or not any(address in network for network in allowed):
        raise SourceNotAllowed(f"{address} is not an allowed source for this provider")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class AuthFailureLimiter:
    """A token bucket per client, spent only by failed authentications: `burst` failures at once, then
    `per_minute`. Bounded memory: the least recently seen clients are forgotten first."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, client: str, now: float) -> _Bucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(self._burst, now)
            self._buckets[client] = bucket
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        return bucket

    def record_failure(self, client: str, now: float) -> None:
        """Count a failed authentication; raises TooManyFailures once the client is over the limit."""
        bucket = self._bucket(client, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        raise TooManyFailures(max(1, int((1 - bucket.tokens) / self._rate) + 1))
