"""Stop signals: the CRI enum, the image's StopSignal text, and their default."""

from __future__ import annotations

import signal

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument


def parse(text: str) -> int:
    """A signal from "SIGTERM", "TERM", "15", "SIGRTMIN+3" or the CRI enum's "SIGRTMINPLUS3"."""
    value = text.strip().upper().replace("PLUS", "+").replace("MINUS", "-")
    if value.isdigit():
        number = int(value)
    else:
        name = value if value.startswith("SIG") else f"SIG{value}"
        base, sign, offset = name.replace("-", "+-").partition("+")
        try:
            number = int(signal.Signals[base]) + (int(offset) if sign else 0)
        except (KeyError, ValueError):
            raise InvalidArgument(f"unknown signal {text!r}") from None
    if not 0 < number < signal.NSIG:
        raise InvalidArgument(f"signal {text!r} is out of range")
    return number


def stop_signal(config: api_pb2.ContainerConfig, image_stop_signal: str) -> int:
    """The container's stop signal: the CRI one, else the image's, else SIGTERM."""
    if config.stop_signal != api_pb2.RUNTIME_DEFAULT:
        return parse(api_pb2.Signal.Name(config.stop_signal))
    if image_stop_signal:
        return parse(image_stop_signal)
    return int(signal.SIGTERM)
