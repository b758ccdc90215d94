"""Structured logging: one JSON object a line on stderr (or plain text for people at a terminal).

Call sites pass their fields through `extra`, e.g. log.info("rpc", extra={"rpc": "Version"});
every key that is not a standard LogRecord attribute becomes a field of the line. Fields, the
message and each traceback line are clipped (cri_shim.errors.clip): they may echo requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from cri_shim.errors import clip

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: clip(v) if isinstance(v, str) else v for k, v in vars(record).items() if k not in _STANDARD}


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    return "\n".join(clip(line) for line in formatter.formatException(record.exc_info).splitlines())  # type: ignore[arg-type]


class JsonFormatter(logging.Formatter):
    """Formats a record as {"ts", "level", "logger", "msg", ...fields}."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clip(record.getMessage()),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = _traceback(self, record)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Formats a record as `time level logger: msg key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        text = f"{self.formatTime(record)} {record.levelname.lower()} {record.name}: {clip(record.getMessage())} {extra}"
        if record.exc_info:
            text += "\n" + _traceback(self, record)
        return text.rstrip()


def setup(level: str, fmt: str) -> None:
    """Installs the chosen formatter on the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimited:
    """One kind of event that may come thousands of times a second (accept failures under a
    flood, say): the first is logged at once, the rest at most once per interval as one line
    with their count, so a storm costs a few lines instead of one each. Needs a running loop."""

    def __init__(self, logger: logging.Logger, message: str, interval: float) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._count = 0
        self._fields: dict[str, object] = {}
        self._flush: asyncio.TimerHandle | None = None

    def note(self, **fields: object) -> None:
        """Counts one event; fields of the latest event go into the line that reports it."""
        self._count += 1
        self._fields = fields
        if self._flush is None:
            self._emit()

    def _emit(self) -> None:
        """Logs what was counted, then holds the next line back for an interval."""
        if not self._count:
            self._flush = None
            return
        self._log()
        self._flush = asyncio.get_running_loop().call_later(self._interval, self._emit)

    def close(self) -> None:
        """Logs what is still counted and stops the timer."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._count:
            self._log()

    def _log(self) -> None:
        self._logger.warning(self._message, extra={**self._fields, "count": self._count})
        self._count = 0
