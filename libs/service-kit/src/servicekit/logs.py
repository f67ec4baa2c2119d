"""One JSON object per log line on stdout, carrying the current request id."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

REQUEST_ID_HEADER = "x-request-id"


def new_request_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex, for a fifth of its cost: one per webhook.
    return os.urandom(16).hex()


# What every carrier of a request id takes as it is: gRPC metadata refuses non-ASCII and control
# characters, and log searches want one token.
_CARRIABLE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


def accept_request_id(given: str | None) -> str:
    """A caller's request id (its first 64 characters), or a new one if it has characters that could
    not travel with the request to the other services."""
    given = (given or "")[:64]
    return given if _CARRIABLE_REQUEST_ID.fullmatch(given) else new_request_id()


class JsonFormatter(logging.Formatter):
    """The gateway writes a line per webhook: formatting is kept to a few microseconds."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatted once a second, not once a line
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:  # what orjson refuses (integers past 64 bits): the slow way
            return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    # The lines carry none of the caller's file, line, thread or process: don't collect them per record
    # (the logging HOWTO's "Optimization" settings; together a third of a line's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs of every webhook would drown the useful lines; outcomes are logged by the handlers.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def run_logged(log: logging.Logger, command: Callable[[], object]) -> int:
    """Run a service's command (serve, migrate) once logging is configured: when it returns, the exit status
    it returned if it is one that may end unfinished (an int), else 0. An error it ends with (the database
    unreachable at start, a port taken, a defect) is logged as one JSON line, its traceback in a field,
    rather than printed raw on stderr where log collectors split it into many lines; then 1."""
    try:
        result = command()
    except Exception as exc:
        log.critical("stopped by an error", exc_info=exc, extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
