"""Acting at once on the signal that stops the server, before uvicorn waits for open connections.

uvicorn answers SIGTERM and Ctrl-C by waiting (up to its graceful timeout) for every connection to
close, and only then runs the lifespan's shutdown. A live stream never closes by itself, so streams
are told to end from the signal itself; the handler uvicorn installed still runs, right after.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def on_exit_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Run `callback` on the running loop when an exit signal arrives, then the handler it replaced.

    Only signals that already have a Python handler (uvicorn's, or Ctrl-C's KeyboardInterrupt) are
    chained: where the default action or "ignore" is in force, it stays so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        with suppress(RuntimeError):  # the loop has closed already: nothing is left to end
            loop.call_soon_threadsafe(callback)
        chained = previous[signal.Signals(signum)]
        if callable(chained):
            chained(signum, frame)

    chained_signals = [sig for sig, handled in previous.items() if callable(handled)]
    for sig in chained_signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in chained_signals:
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous[sig])
