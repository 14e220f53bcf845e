"""Structured logs: one JSON object per line on stderr (or plain text for people)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass

from aiohttp.http_exceptions import HttpProcessingError

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    """What the record was given with ``extra=``: every attribute a plain LogRecord lacks."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


# A string printed bare: not empty, no whitespace, quote, backslash or equals sign (else JSON-quoted),
# so that a line splits back into its fields.
_BARE = re.compile(r'[^\s"=\\]+')


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) else json.dumps(value)
    # Numbers, None, lists: their compact JSON (null, [], ["a.json"]), quoted only if it has whitespace.
    text = json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(text) if re.search(r"\s", text) else text


class TextFormatter(logging.Formatter):
    """``2026-01-02 03:04:05,678 INFO lobwife: lobwife serving grpc=127.0.0.1:50051 http=...``.

    For people: the message, then the record's structured fields (``extra=``) as
    ``key=value``, a value quoted as a JSON string when it has spaces, quotes or ``=``.
    Without them the text log would lose what the JSON one says (ports, paths, run ids).
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in _extras(record).items())
        return f"{line} {fields}" if fields else line


#: Records of one key (logger, level, message template) let through per interval before counting.
RATE_LIMIT_BURST = 10
RATE_LIMIT_INTERVAL = 60.0


@dataclass
class _Window:
    ends: float
    seen: int = 0
    suppressed: int = 0
    last: logging.LogRecord | None = None


class RateLimitFilter(logging.Filter):
    """Lets the first ``burst`` warnings/errors of each message key per ``interval`` through.

    The key is the logger, the level and the message *template* (``record.msg``), so
    "HTTP %s %s failed" for a thousand paths is one key. The rest are counted; once the
    interval is over, the next record logged (any key) brings a summary line first:
    the last suppressed message, with ``repeated`` = how many were left out. Info and
    debug records are not limited. A burst of identical errors (every client of an
    overloaded server failing the same way) is then ~10 lines a minute per key, not
    thousands.
    """

    def __init__(
        self,
        handler: logging.Handler,
        *,
        burst: int = RATE_LIMIT_BURST,
        interval: float = RATE_LIMIT_INTERVAL,
        level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.burst = burst
        self.interval = interval
        self.level = level
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._next_end = float("inf")
        self._summarising = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self._summarising:
            return True
        now = time.monotonic()
        if now >= self._next_end:
            self.flush(now)  # first, so that a summary comes before the record that brought it
        if record.levelno < self.level:
            return True
        key = (record.name, record.levelno, str(record.msg))
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(now + self.interval)
            self._next_end = min(self._next_end, w.ends)
        w.seen += 1
        if w.seen <= self.burst:
            return True
        w.suppressed += 1
        w.last = record
        return False

    def flush(self, now: float | None = None) -> None:
        """Summarise the windows that ended by ``now`` (all of them when None: at exit)."""
        ended = [k for k, w in self._windows.items() if now is None or w.ends <= now]
        for key in ended:
            w = self._windows.pop(key)
            if w.suppressed and w.last is not None:
                self._summary(w)
        self._next_end = min((w.ends for w in self._windows.values()), default=float("inf"))

    def _summary(self, w: _Window) -> None:
        last = w.last
        assert last is not None
        summary = logging.LogRecord(
            last.name,
            last.levelno,
            last.pathname,
            last.lineno,
            "%s ... repeated %d times in %gs (not logged)",
            (last.getMessage(), w.suppressed, self.interval),
            None,
        )
        summary.repeated = w.suppressed
        self._summarising = True
        try:
            self.handler.handle(summary)
        finally:
            self._summarising = False


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, with the rate limiter's pending summaries written out when logging shuts down."""

    limiter: RateLimitFilter | None = None

    def close(self) -> None:
        if self.limiter is not None:
            limiter, self.limiter = self.limiter, None
            limiter.flush()
        super().close()


class ClientFaultFilter(logging.Filter):
    """aiohttp logs a malformed request or a vanished client as an error with a traceback.

    It is the client's fault and says nothing about the server, so it becomes one debug
    line (the request answered 400 or was dropped all the same).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | ConnectionError):
            return True
        if isinstance(record.args, tuple):
            record.msg, record.args = f"{record.msg}: %s", (*record.args, exc)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def setup(level: str, fmt: str) -> None:
    handler = _Handler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    limiter = RateLimitFilter(handler)
    handler.addFilter(limiter)
    handler.limiter = limiter
    root = logging.getLogger()
    root.handlers[:] = [handler]
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaultFilter) for f in server_log.filters):
        server_log.addFilter(ClientFaultFilter())
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: too chatty at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # APScheduler logs every timer at info; lobwife logs what matters about each run itself.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
