"""Running blocking work that changes namespaces on a thread of its own.

The kernel keeps namespace membership (unshare, setns) per thread. Such work therefore never
runs on a pool thread, which would carry the namespace on into whatever it runs next: each call
gets a fresh threading.Thread, which exits right after, taking its namespaces with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def on_new_thread(fn: Callable[[], T], name: str, discard: Callable[[T], None]) -> T:
    """fn's result (or exception), computed on a new thread.

    If the caller is cancelled, this still waits for fn to finish, so that nothing fn made is
    left unseen: `discard` releases a result nobody will receive (it runs on the loop)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            loop.call_soon_threadsafe(done.set_exception, exc)
        else:
            loop.call_soon_threadsafe(done.set_result, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])
        if done.exception() is None:
            discard(done.result())
        raise
