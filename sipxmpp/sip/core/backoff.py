"""
How long to wait before trying again after failures: the one formula the
gateway's own SIP requests share (SUBSCRIBE mode, PIDF PUBLISH).
"""

from __future__ import annotations

from collections.abc import Callable


def backoffDelay(failures: int, base: float, cap: float, jitter: Callable[[], float]) -> float:
    """
    The delay before attempt C{failures + 1}: C{base} doubling per failure
    up to C{cap}, scaled by C{0.5 + jitter() / 2} so that many users that
    failed together do not retry together.
    """
    delay: float = min(cap, base * 2 ** min(max(failures - 1, 0), 30))
    return delay * (0.5 + jitter() / 2)
