"""A machine-speed reference: a fixed pure-Python loop, timed.

The machines here run the same code up to several times faster or slower from one hour to the
next; a figure is read together with this loop's time measured in the same run.
"""

from __future__ import annotations

import time

ADDITIONS = 20_000_000


def additions_seconds(count: int = ADDITIONS) -> float:
    """Seconds this process takes to add `count` integers in a plain `for` loop."""
    started = time.perf_counter()
    total = 0
    for number in range(count):
        total += number
    return time.perf_counter() - started
