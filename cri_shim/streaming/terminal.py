"""Terminal resize messages and applying them to a pty.

Clients write one JSON object per resize, `{"Width":80,"Height":24}` (Go's TerminalSize,
field names matched case-insensitively as encoding/json does), back to back with optional
whitespace between them. A message that is not such an object ends the resize stream, as the
reference server's json.Decoder loop does.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import struct
import termios

from cri_shim.streaming.backend import TerminalSize

# A resize message is ~30 bytes; anything this large without a complete object is garbage.
MAX_PENDING = 4096


class ResizeError(ValueError):
    """The resize stream carried something other than size objects."""


class ResizeDecoder:
    """Turns the bytes of a resize stream into sizes, whatever the chunking."""

    def __init__(self) -> None:
        self._pending = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> list[TerminalSize]:
        try:
            self._pending += self._utf8.decode(data)
        except UnicodeDecodeError:
            raise ResizeError("resize stream is not UTF-8") from None
        sizes = []
        while text := self._pending.lstrip():
            if text[0] != "{":
                raise ResizeError(f"resize message does not start with an object: {text[:20]!r}")
            end = _object_end(text)
            if end is None:
                if len(text) > MAX_PENDING:
                    raise ResizeError("resize message too long")
                break  # an object cut in two: wait for the rest
            try:
                obj = json.loads(text[:end])
            except json.JSONDecodeError as exc:
                raise ResizeError(f"bad resize message: {exc}") from None
            self._pending = text[end:]
            sizes.append(_size(obj))
        else:
            self._pending = ""
        return sizes


def _object_end(text: str) -> int | None:
    """Where the JSON object at the start of text ends, or None if it is not complete yet."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _size(obj: object) -> TerminalSize:
    if not isinstance(obj, dict):
        raise ResizeError("resize message is not an object")
    fields = {k.lower(): v for k, v in obj.items()}
    width, height = fields.get("width", 0), fields.get("height", 0)
    for v in (width, height):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFF:
            raise ResizeError(f"bad terminal dimension {v!r}")
    return TerminalSize(width, height)


def set_window_size(fd: int, size: TerminalSize) -> None:
    """Applies a size to a pty (either side) with TIOCSWINSZ; the kernel signals SIGWINCH to
    the terminal's foreground process group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))
