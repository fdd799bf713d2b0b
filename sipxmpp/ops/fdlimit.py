"""
The open-file limit: every XMPP session and every SIP TCP/TLS connection
holds a file descriptor, and the common service default of 1,024 stops a
gateway at about 1,000 users, silently (issue 21: 1,009 of 1,100
sessions came up and C{/status} stopped answering).

L{FDMonitor} raises the soft C{RLIMIT_NOFILE} to the hard limit when the
service starts and logs both; then every L{INTERVAL} seconds it counts
the process's open descriptors and logs a warning when they pass
L{WARN_SHARE} of the limit. Its L{FDMonitor.check} is the C{fds} health
check, failing above L{FAIL_SHARE}.

The hard limit is the operator's to raise (systemd C{LimitNOFILE=},
C{ulimit -Hn}, C{/etc/security/limits.conf}).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sipxmpp.ops.health import CheckResult

#: Seconds between two counts of the open descriptors.
INTERVAL = 10.0
#: The share of the limit above which a warning is logged.
WARN_SHARE = 0.8
#: The share of the limit above which the C{fds} check fails.
FAIL_SHARE = 0.95
#: The share below which the warning is re-armed (no warning per count
#: while the gateway hovers around L{WARN_SHARE}).
REARM_SHARE = 0.75
#: The soft limit tried when the hard limit is unlimited (some BSDs,
#: macOS): the kernel refuses an unlimited soft C{RLIMIT_NOFILE}.
UNLIMITED_TARGET = 1_048_576
#: Below this limit the start-up line is a warning: a gateway for more than
#: a few hundred users needs more.
LOW_LIMIT = 4096


class Limits(Protocol):
    """
    The process's C{RLIMIT_NOFILE} (L{SystemLimits}, or a fake in tests).
    """

    def get(self) -> tuple[int, int]:
        """
        Return C{(soft, hard)}; C{hard} is C{-1} when unlimited.
        """

    def setSoft(self, soft: int, hard: int) -> None:
        """
        Set the soft limit (keeping C{hard}); raise L{OSError} or
        L{ValueError} when refused.
        """


class SystemLimits:
    """
    L{Limits} of this process, by the C{resource} module.
    """

    def get(self) -> tuple[int, int]:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        unlimited = resource.RLIM_INFINITY
        return (-1 if soft == unlimited else soft), (-1 if hard == unlimited else hard)

    def setSoft(self, soft: int, hard: int) -> None:
        import resource

        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, resource.RLIM_INFINITY if hard < 0 else hard)
        )


def openFileCount() -> int | None:
    """
    Return how many file descriptors this process has open, or L{None}
    where they cannot be listed (C{/proc/self/fd} on Linux, C{/dev/fd}).
    """
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            # Minus the descriptor listdir itself opened.
            return max(len(os.listdir(folder)) - 1, 0)
        except OSError:
            continue
    return None


def raiseOpenFileLimit(limits: Limits, log: Logger) -> int:
    """
    Raise the soft open-file limit to the hard one, log the outcome, and
    return the soft limit now in force (C{-1}: unlimited).
    """
    soft, hard = limits.get()
    target = UNLIMITED_TARGET if hard < 0 else hard
    if soft < 0 or soft >= target:
        limit = soft
        log.info("open-file limit {soft} (hard limit {hard})",
                 soft=_show(soft), hard=_show(hard))  # fmt: skip
    else:
        try:
            limits.setSoft(target, hard)
        except (OSError, ValueError) as e:
            log.warn("open-file limit {soft}: raising it to {target} failed ({why})",
                     soft=soft, target=target, why=e)  # fmt: skip
            limit = soft
        else:
            limit = target
            log.info("open-file limit raised from {soft} to {limit} (hard limit {hard})",
                     soft=soft, limit=limit, hard=_show(hard))  # fmt: skip
    if 0 <= limit < LOW_LIMIT:
        log.warn(
            "open-file limit is only {limit}: each XMPP session and SIP connection "
            "needs one; raise the hard limit (systemd LimitNOFILE=, ulimit -Hn)",
            limit=limit,
        )
    return limit


def _show(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


class FDMonitor(Service):
    """
    Raise the open-file limit at start, then watch how much of it is used.

    @ivar limit: the soft limit in force (C{-1}: unlimited; C{0} before
        start).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, limits: Limits | None = None,
                 count: Callable[[], int | None] = openFileCount,
                 interval: float = INTERVAL) -> None:  # fmt: skip
        self.clock = clock
        self.limits: Limits = limits if limits is not None else SystemLimits()
        self.count = count
        self.interval = interval
        self.limit = 0
        self.warned = False
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self.limit = raiseOpenFileLimit(self.limits, self.log)
        loop = LoopingCall(self.watch)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def share(self) -> tuple[int | None, float]:
        """
        Return the open descriptors and their share of the limit (C{0.0}
        when unlimited or unknown).
        """
        used = self.count()
        if used is None or self.limit <= 0:
            return used, 0.0
        return used, used / self.limit

    def watch(self) -> None:
        """
        Count the open descriptors; warn once when they pass
        L{WARN_SHARE} of the limit, again after they fell below
        L{REARM_SHARE}.
        """
        used, share = self.share()
        if share > WARN_SHARE and not self.warned:
            self.warned = True
            self.log.warn(
                "{used} of {limit} open files in use ({share:.0%}): XMPP sessions and SIP "
                "connections will fail at the limit; raise it (systemd LimitNOFILE=)",
                used=used, limit=self.limit, share=share,
            )
        elif share < REARM_SHARE and self.warned:
            self.warned = False
            self.log.info("{used} of {limit} open files in use ({share:.0%})",
                          used=used, limit=self.limit, share=share)  # fmt: skip

    def check(self) -> CheckResult:
        """
        The C{fds} health check: at most L{FAIL_SHARE} of the limit used.
        """
        used, share = self.share()
        if used is None:
            return CheckResult(True, "open files cannot be counted here")
        if self.limit <= 0:
            return CheckResult(True, f"{used} open files (no limit)")
        detail = f"{used} of {self.limit} open files ({share:.0%})"
        if share > FAIL_SHARE:
            return CheckResult(False, detail + f" (more than {FAIL_SHARE:.0%})")
        return CheckResult(True, detail)
