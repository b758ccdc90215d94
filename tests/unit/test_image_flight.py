"""SingleFlight: shared work, cancelled only when its last caller leaves."""

from __future__ import annotations

import asyncio

import pytest

from cri_shim.image.flight import SingleFlight

pytestmark = pytest.mark.unit


def test_callers_share_one_run_and_the_last_to_leave_cancels_it() -> None:
    async def scenario() -> None:
        flight: SingleFlight[int] = SingleFlight()
        runs, cleaned = [], []
        release = asyncio.Event()

        async def work() -> int:
            runs.append(1)
            try:
                await release.wait()
                return 42
            except asyncio.CancelledError:
                cleaned.append(1)
                raise

        a = asyncio.ensure_future(flight.run("k", work))
        b = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.sleep(0.01)
        assert flight.running("k") and not cleaned  # b still waits: the work goes on
        release.set()
        assert await b == 42 and len(runs) == 1

        release.clear()
        c = asyncio.ensure_future(flight.run("k", work))
        await asyncio.sleep(0.01)
        c.cancel()
        with pytest.raises(asyncio.CancelledError):
            await c
        assert cleaned == [1] and not flight.running("k")  # cleanup finished before c returned

    asyncio.run(scenario())
