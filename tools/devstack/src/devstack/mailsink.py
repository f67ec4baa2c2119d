"""A local SMTP server (aiosmtpd) that keeps every message: the mail sink of `make run`, and the
real SMTP peer of the tests (with optional STARTTLS, AUTH and scripted failure replies)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class SinkHandler:
    directory: Path | None = None
    raw: list[bytes] = field(default_factory=list)
    # Replies to give to the next DATA commands instead of accepting, e.g. "451 4.3.0 Try again later".
    scripted: deque[str] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Recipients refused at RCPT with 550, as a server without that mailbox would.
    unknown_recipients: set[str] = field(default_factory=set)
    _next_file: int | None = None  # the number of the next .eml file in `directory`

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        if address in self.unknown_recipients:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        with self.lock:
            if self.scripted:
                return self.scripted.popleft()
            self.raw.append(envelope.content)  # parsed when read: the sink must not be the bottleneck
            if self.directory is not None:
                self._save(envelope.content)
        return "250 2.0.0 OK"

    def _save(self, content: bytes) -> None:
        """Numbered after the highest file kept from earlier runs (read once), so a file someone deleted
        never makes the next message overwrite another."""
        if self._next_file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            kept = (int(p.stem) for p in self.directory.glob("*.eml") if p.stem.isdigit())
            self._next_file = max(kept, default=0) + 1
        (self.directory / f"{self._next_file:06d}.eml").write_bytes(content)
        self._next_file += 1


class MailSink:
    """Runs in a thread of its own; `start()` returns once it listens."""

    def __init__(self, port: int, *, directory: Path | None = None, tls_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None, fast: bool = False) -> None:
        self.handler = SinkHandler(directory=directory)
        self.port = port
        kwargs: dict = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        if credentials is not None:
            login, password = credentials[0].encode(), credentials[1].encode()

            def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
                ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (login, password)
                return AuthResult(success=ok)

            kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=tls_context is not None)
        # fast: uvloop, for make run and make bench, where aiosmtpd costs over a millisecond per message on the
        # stock loop and the sink shares the cores with the system it receives from. The tests keep the stock
        # loop: uvloop refuses to close (EBUSY) while a client killed mid-session still holds a connection.
        loop = uvloop.new_event_loop() if fast else asyncio.new_event_loop()
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=port, loop=loop, **kwargs)

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler.lock:
            raw = list(self.handler.raw)
        return [message_from_bytes(content, policy=policy.default) for content in raw]

    @property
    def count(self) -> int:
        with self.handler.lock:
            return len(self.handler.raw)

    def fail_next(self, *replies: str) -> None:
        with self.handler.lock:
            self.handler.scripted.extend(replies)

    def start(self) -> MailSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def main() -> int:
    """`python -m devstack.mailsink PORT DIR`: keep every message as an .eml file in DIR."""
    import signal
    import sys

    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sink = MailSink(port, directory=directory, fast=True).start()
    print(f"mail sink listening on 127.0.0.1:{port}, saving to {directory}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
