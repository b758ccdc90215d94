"""Structured logging: one JSON object a line on stderr (or plain text for people at a terminal).

Call sites pass their fields through `extra`, e.g. log.info("rpc", extra={"rpc": "Version"});
every key that is not a standard LogRecord attribute becomes a field of the line. Fields, the
message and each traceback line are clipped (cri_shim.errors.clip): they may echo requests.
"""

from __future__ import annotations

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
