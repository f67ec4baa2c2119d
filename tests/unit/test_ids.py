"""Ids made on the hot path without the uuid module's objects must still be what readers expect."""

from __future__ import annotations

import uuid

from billing.domain.model import new_id
from servicekit.logs import new_request_id


def test_row_ids_are_random_uuids_in_canonical_text():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_request_ids_are_128_random_bits_in_hex():
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
