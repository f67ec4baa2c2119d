"""Ids made on the hot path without the uuid module's objects must still be what readers expect."""

from __future__ import annotations

import time
import uuid

from billing.domain.model import new_id
from servicekit.logs import accept_request_id, new_request_id


def test_row_ids_are_time_ordered_uuids_in_canonical_text():
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after  # the creation millisecond leads
    # Ordered by the millisecond made, so new keys go to the end of the index.
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_request_ids_are_128_random_bits_in_hex():
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_a_callers_request_id_is_kept_when_every_service_can_carry_it():
    for given in ("req-abc", "4bf92f3577b34da6a3ce929d0e0e4736", "trace:01/span=2+x", "a" * 64):
        assert accept_request_id(given) == given
    assert accept_request_id("b" * 80) == "b" * 64


def test_a_request_id_with_spaces_controls_or_non_ascii_is_replaced_by_a_new_one():
    for given in (None, "", "two words", "tab\there", "caf\u00e9", "line\nbreak"):
        replaced = accept_request_id(given)
        assert replaced != given and len(replaced) == 32 and int(replaced, 16) >= 0
