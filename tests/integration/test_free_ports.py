"""Ports for the services a stack starts: never ones an outgoing connection could take before they bind."""

from __future__ import annotations

import socket

from devstack.stack import _ephemeral_range, free_port


def test_ports_handed_out_are_free_distinct_and_outside_the_range_outgoing_connections_use():
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert not any(low <= p <= high for p in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # still free to bind
