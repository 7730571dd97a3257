"""Worker processes: `workers: N` serves one listen address from N processes with SO_REUSEPORT.

The parent serves nothing. It first checks that the address is free with a bind *without*
SO_REUSEPORT, so a port held by anything else (another gateway in a SO_REUSEPORT group included) is
the usual "cannot serve" error rather than a silent partner. Then it spawns N workers with the
'spawn' start method (a fresh interpreter each: no inherited event loop, sockets or locks); each runs
the whole app on its own SO_REUSEPORT socket and the kernel spreads new connections over them.
Workers share sessions only through Redis and the cookie secret (config rejects store: memory).

Reloading: SIGHUP to the parent is passed on to every worker, which re-reads the configuration file
itself (gateway.web.reload). The parent blocks SIGHUP while it starts them and the workers inherit the
blocked mask until their app installs its handler: a SIGHUP that reaches a worker still starting
waits, pending, and then reloads; it neither kills the worker nor gets lost.

Stopping: SIGTERM or SIGINT to the parent becomes SIGTERM to every worker, which drains for
shutdown_timeout; the parent waits that long plus STOP_MARGIN, kills whatever is left and returns
when every worker stopped cleanly. A worker that exits while nobody asked (crash, OOM kill) makes the
parent stop the others and raise WorkerError: the process exits non-zero and its supervisor (systemd,
Kubernetes) restarts the whole set. A worker whose parent died stops by itself, so no orphan keeps the
port; and a worker acts on the first stop signal only (systemd signals the whole control group, and
the parent forwards the signal as well).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TypeVar

from aiohttp import web

from gateway.errors import WorkerError

__all__ = ["STOP_MARGIN", "check_bindable", "stop_gracefully_once", "supervise"]

log = logging.getLogger(__name__)

STOP_MARGIN = 5.0  # seconds beyond shutdown_timeout for a worker's own clean-up (Redis, HTTP clients)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_T = TypeVar("_T")


def check_bindable(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE, EACCES, ...) unless every address of host:port can be bound now."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio: TIME_WAIT is no conflict
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)


def stop_gracefully_once(loop: asyncio.AbstractEventLoop) -> None:
    """In a worker: the first SIGTERM/SIGINT, or the parent's death, makes aiohttp's run_app drain and
    return; later signals are ignored so that a second one cannot cut the drain short."""
    parent = multiprocessing.parent_process()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if parent is not None:
            loop.remove_reader(parent.sentinel)  # readable for good once the parent is gone
        if not stopping:
            stopping = True
            raise web.GracefulExit()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    if parent is not None:
        loop.add_reader(parent.sentinel, stop)


def _describe(worker: BaseProcess) -> str:
    code = worker.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with {code}"
    return f"{worker.name} (pid {worker.pid}) {how}"


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler, so that the signal reaches the wakeup fd (SIG_IGN would drop it)."""


def _stop(workers: list[BaseProcess], timeout: float) -> list[BaseProcess]:
    """SIGTERM every live worker, wait up to `timeout`, SIGKILL the rest; the killed ones are returned."""
    started = [w for w in workers if w.pid is not None]
    for worker in started:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + timeout
    for worker in started:
        worker.join(max(0.0, deadline - time.monotonic()))
    late = [w for w in started if w.is_alive()]
    for worker in late:
        worker.kill()
        worker.join()
    return late


def _pass_on_sighup(workers: Sequence[BaseProcess]) -> None:
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGHUP)


def _wait_for_stop(wake_r: socket.socket, workers: Sequence[BaseProcess]) -> list[object]:
    """Until a stop signal arrives or a worker exits; a SIGHUP (passed on by its handler) is no stop."""
    while True:
        ready: list[object] = list(multiprocessing.connection.wait([wake_r, *(w.sentinel for w in workers)]))
        if ready == [wake_r] and set(wake_r.recv(512)) <= {signal.SIGHUP}:
            continue
        return ready


def supervise(count: int, target: Callable[[_T], None], arg: _T, *, shutdown_timeout: float) -> None:
    """Run `target(arg)` in `count` spawned processes until SIGTERM/SIGINT; WorkerError if one failed."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=target, args=(arg,), name=f"worker {i}") for i in range(1, count + 1)]
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    previous = {sig: signal.signal(sig, _ignore) for sig in _STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # inherited by the workers (see above)
    previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: _pass_on_sighup(workers))
    previous_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    ready: list[object] = []
    try:
        for worker in workers:
            worker.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        log.info("serving with %d workers (pids %s)", count, ", ".join(str(w.pid) for w in workers))
        ready = _wait_for_stop(wake_r, workers)
    finally:
        late = _stop(workers, shutdown_timeout + STOP_MARGIN)
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        signal.signal(signal.SIGHUP, previous_hup)
        wake_r.close()
        wake_w.close()
    requested = wake_r in ready
    if late:
        raise WorkerError(f"{late[0].name} (pid {late[0].pid}) did not stop within "
                          f"{shutdown_timeout + STOP_MARGIN:g}s and was killed")
    if not requested:
        gone = next(w for w in workers if w.exitcode is not None and w.sentinel in ready)
        raise WorkerError(f"{_describe(gone)} unexpectedly; stopped the other workers")
    failed = [w for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise WorkerError(f"{_describe(failed[0])} while stopping")
