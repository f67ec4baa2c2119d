"""Log lines: one JSON object per line that operators' tools can parse, whatever a caller puts in it."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from servicekit.logs import JsonFormatter, configure_logging, request_id_var


@pytest.fixture
def log():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("billing"))
    logger = logging.getLogger("test.logs")
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    logger.lines = lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    yield logger
    logger.handlers[:] = []


def test_a_line_carries_time_level_service_logger_request_id_and_fields(log):
    token = request_id_var.set("req-1")
    try:
        log.info("event applied", extra={"fields": {"event_id": "evt_1", "n": 2}})
    finally:
        request_id_var.reset(token)
    (line,) = log.lines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {"level": "info", "service": "billing", "logger": "test.logs", "message": "event applied",
                    "request_id": "req-1", "event_id": "evt_1", "n": 2}


def test_lines_within_one_second_keep_their_own_milliseconds(log):
    for created in (1_700_000_000.25, 1_700_000_000.875, 1_700_000_001.5):  # exact in binary
        record = log.makeRecord(log.name, logging.INFO, "", 0, "m", (), None)
        record.created = created
        log.handle(record)
    assert [line["time"] for line in log.lines()] == [
        "2023-11-14T22:13:20.250Z", "2023-11-14T22:13:20.875Z", "2023-11-14T22:13:21.500Z"]


def test_awkward_fields_still_make_one_parseable_line(log):
    log.warning("odd", extra={"fields": {"amount": 10**30, 7: "numeric key", "when": object(), "text": 'say "é"'}})
    (line,) = log.lines()
    assert (line["amount"], line["7"], line["text"]) == (10**30, "numeric key", 'say "é"')
    assert line["when"].startswith("<object object")


def test_an_exception_is_inside_its_line(log):
    try:
        raise ValueError("bad rule")
    except ValueError:
        log.exception("event could not be applied")
    (line,) = log.lines()
    assert line["level"] == "error" and "ValueError: bad rule" in line["exception"]


def test_configured_services_write_json_lines_to_stdout_at_their_level(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging._srcfile
    try:
        configure_logging("notifier", "WARNING")
        logging.getLogger("notifier.smtp").info("not shown")
        logging.getLogger("notifier.smtp").warning("shown")
    finally:
        root.handlers[:], root.level, logging._srcfile = saved
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"] == "shown" and json.loads(line)["service"] == "notifier"
