"""Edge protection rules: client address behind trusted proxies, allow-lists, the failure limiter."""

from __future__ import annotations

import ipaddress

import pytest
from gateway.domain.edge import (
    AuthFailureLimiter,
    SourceNotAllowed,
    TooManyFailures,
    check_allowed,
    client_address,
    parse_networks,
)


PROXIES = parse_networks("10.0.0.0/8")


@pytest.mark.parametrize(
    ("peer", "lines", "trusted", "expected"),
    [("203.0.113.9", [], PROXIES, "203.0.113.9"),
     ("10.0.0.2", ["198.51.100.7"], (), "10.0.0.2"),                 # no trusted proxy: the header is ignored
     ("203.0.113.9", ["198.51.100.7"], PROXIES, "203.0.113.9"),      # the peer is no proxy of ours
     ("10.0.0.2", ["198.51.100.7"], PROXIES, "198.51.100.7"),
     ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], PROXIES, "198.51.100.7"),  # the client's own claim is ignored
     ("10.0.0.3", ["198.51.100.7, 10.0.0.2"], PROXIES, "198.51.100.7"),  # through two proxies
     ("10.0.0.3", ["6.6.6.6", "198.51.100.7", "10.0.0.2"], PROXIES, "198.51.100.7"),  # several header lines
     ("10.0.0.2", [""], PROXIES, "10.0.0.2"), ("10.0.0.2", ["garbage"], PROXIES, "10.0.0.2"),
     ("10.0.0.2", ["garbage, 10.0.0.9"], PROXIES, "10.0.0.9"),
     ("10.0.0.2", ["\u00b2\u00b3, 198.51.100.7"], PROXIES, "198.51.100.7"),
     ("10.0.0.2", ["\udcff"], PROXIES, "10.0.0.2"), (None, [], PROXIES, None)],
)
def test_client_address_reads_forwarded_for_only_from_trusted_proxies(peer, lines, trusted, expected):
    got = client_address(peer, lines, trusted)
    assert got == (ipaddress.ip_address(expected) if expected else None)


def test_allow_list_accepts_members_only_and_empty_means_any():
    allowed = parse_networks("3.18.12.63/32, 54.187.0.0/16")
    check_allowed(ipaddress.ip_address("54.187.1.2"), allowed)
    check_allowed(ipaddress.ip_address("1.2.3.4"), ())
    for outsider in (ipaddress.ip_address("1.2.3.4"), None):
        with pytest.raises(SourceNotAllowed):
            check_allowed(outsider, allowed)


def test_failures_over_the_burst_are_refused_until_the_bucket_refills():
    limiter = AuthFailureLimiter(per_minute=60, burst=3)
    for _ in range(3):
        limiter.record_failure("1.2.3.4", now=100.0)
    with pytest.raises(TooManyFailures) as error:
        limiter.record_failure("1.2.3.4", now=100.0)
    assert error.value.retry_after >= 1
    limiter.record_failure("5.6.7.8", now=100.0)  # other clients are not affected
    limiter.record_failure("1.2.3.4", now=101.5)  # one token back after a second at 60/min


def test_limiter_memory_is_bounded():
    limiter = AuthFailureLimiter(per_minute=1, burst=1, max_clients=10)
    for i in range(1000):
        limiter.record_failure(f"client-{i}", now=0.0)
    assert len(limiter._buckets) == 10
