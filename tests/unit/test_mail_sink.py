"""The local mail sink of `make run` keeps every message as a numbered .eml file, across runs."""

from __future__ import annotations

from types import SimpleNamespace

from devstack.mailsink import SinkHandler


async def test_messages_are_numbered_after_the_files_kept_and_never_overwrite_one(tmp_path):
    # Files from earlier runs, one of which someone deleted (000002).
    (tmp_path / "000001.eml").write_bytes(b"first")
    (tmp_path / "000003.eml").write_bytes(b"third")
    handler = SinkHandler(directory=tmp_path)
    for content in (b"new one", b"new two"):
        assert await handler.handle_DATA(None, None, SimpleNamespace(content=content)) == "250 2.0.0 OK"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        "000001.eml": b"first", "000003.eml": b"third", "000004.eml": b"new one", "000005.eml": b"new two"}
    assert handler.raw == [b"new one", b"new two"]
