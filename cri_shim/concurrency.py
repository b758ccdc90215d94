"""Running steps concurrently where each must finish even when another fails."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def gather_all(steps: Iterable[Coroutine[Any, Any, Any]]) -> None:
    """Runs steps concurrently and waits for every one; then raises the first failure.

    asyncio.gather would raise at the first failure and leave the others running unseen,
    which for teardown steps means a release nobody waits for.
    """
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
