"""Datetimes become protobuf Timestamps exactly as protobuf's own conversion makes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from servicekit.timestamps import to_timestamp

_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _protobufs(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS))
def test_an_aware_datetime_becomes_the_timestamp_protobuf_makes(value):
    assert to_timestamp(value) == _protobufs(value)
    assert to_timestamp(value).ToDatetime(tzinfo=UTC) == value


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_a_naive_datetime_is_taken_as_utc_as_protobuf_takes_it(value):
    assert to_timestamp(value) == _protobufs(value)


def test_none_stays_none():
    assert to_timestamp(None) is None
