"""The text log format keeps the structured fields the JSON one has."""

from __future__ import annotations

import io
import json
import logging
import shlex
from collections.abc import Iterator

import pytest

from lobwife_server.core import logs


@pytest.fixture
def text_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.TextFormatter())
    logger = logging.getLogger("lobwife.test_text_log")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)
    logger.propagate = True


def test_text_lines_carry_the_extra_fields(text_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = text_log
    logger.info("lobwife serving", extra={"grpc": "127.0.0.1:50051", "http": "127.0.0.1:8081", "startup_seconds": 0.05})
    line = out.getvalue().rstrip("\n")
    assert line.endswith(
        " INFO lobwife.test_text_log: lobwife serving grpc=127.0.0.1:50051 http=127.0.0.1:8081 startup_seconds=0.05"
    )


def test_values_that_need_it_are_quoted_and_split_back(text_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = text_log
    extra = {
        "path": "/tmp/my state/lobwife.db",
        "reason": 'said "no"',
        "query": "a=b",
        "empty": "",
        "exit_code": None,
        "ok": True,
        "imported": ["tasks.json"],
        "pair": ["a b", 1],
    }
    logger.warning("run %d of %s ended", 7, "hello", extra=extra)
    line = out.getvalue().rstrip("\n")
    head, _, tail = line.partition("ended ")
    assert head.endswith("WARNING lobwife.test_text_log: run 7 of hello ")
    assert tail == (
        'path="/tmp/my state/lobwife.db" reason="said \\"no\\"" query="a=b" empty="" '
        'exit_code=null ok=true imported=["tasks.json"] pair="[\\"a b\\",1]"'
    )
    # The strings' quoting is shell-compatible: shlex splits the fields back.
    fields = dict(part.split("=", 1) for part in shlex.split(tail))
    strings = ("path", "reason", "query", "empty")
    assert [fields[k] for k in strings] == [extra[k] for k in strings]
    assert json.loads(fields["pair"]) == ["a b", 1]


def test_no_extra_fields_no_trailing_space(text_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = text_log
    logger.info("plain")
    assert out.getvalue().endswith(": plain\n")


def test_traceback_comes_after_the_fields(text_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = text_log
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed", extra={"job": "hello"})
    first, *rest = out.getvalue().splitlines()
    assert first.endswith(": failed job=hello")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


def test_setup_text_uses_the_field_formatter() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("info", "text")
        assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
        logs.setup("info", "json")
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
