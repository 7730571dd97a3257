"""A worker's stop signals (gateway.web.workers.stop_gracefully_once) on a private event loop."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from aiohttp import web

from gateway.web.workers import stop_gracefully_once


@pytest.mark.parametrize("first, second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM)])
def test_only_the_first_stop_signal_counts(first: signal.Signals, second: signal.Signals) -> None:
    """systemd signals every process of the unit and the parent forwards: a second signal must not
    interrupt the drain the first one started (run_app would exit with GracefulExit's status 1)."""
    loop = asyncio.new_event_loop()
    try:
        stop_gracefully_once(loop)
        os.kill(os.getpid(), first)
        with pytest.raises(web.GracefulExit):
            loop.run_until_complete(asyncio.sleep(5))  # a bound: the signal ends it at once
        os.kill(os.getpid(), second)
        for _ in range(20):  # enough loop iterations for the signal's handler to have run
            loop.run_until_complete(asyncio.sleep(0))
        # still here: the second signal was absorbed; a fresh loop stop works normally
        assert not loop.is_closed()
    finally:
        loop.close()  # removes the handlers (SIGINT back to KeyboardInterrupt, SIGTERM to default)
