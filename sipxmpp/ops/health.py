"""
The named health checks behind C{/healthz/ready} (and C{/healthz}).

Each check is a callable returning a L{CheckResult} (or a bool, or a
Deferred of either); the web resource runs them all at once and bounds each
by L{CHECK_TIMEOUT}. Checks:

  - C{store}: a query answers, run in the store's thread pool;
  - C{upstream}: the last OPTIONS keepalives to C{[sip] upstream} were
    answered within L{UPSTREAM_TIMEOUT} (L{UpstreamProbe}; only when an
    upstream is configured);
  - C{xmpp}: at most L{XMPP_FAILING_SHARE} of the users' XMPP sessions are
    failing (a refused login, or reconnecting);
  - C{reactor}: the overload monitor's last reactor lag is below
    L{LAG_LIMIT};
  - C{fds}: at most 95 % of the open-file limit is in use
    (L{sipxmpp.ops.fdlimit.FDMonitor}).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.wire.message import SIPResponse

#: Seconds a check may take before it counts as failing.
CHECK_TIMEOUT = 3.0
#: Seconds between two OPTIONS keepalives to the upstream.
UPSTREAM_INTERVAL = 10.0
#: Seconds the upstream has to answer one.
UPSTREAM_TIMEOUT = 5.0
#: Keepalives in a row left unanswered before the upstream check fails.
UPSTREAM_MISSES = 3
#: The share of failing XMPP sessions above which the check fails.
XMPP_FAILING_SHARE = 0.5
#: Seconds after start during which failing XMPP sessions are not held
#: against readiness (a restart logs every user in at once).
XMPP_GRACE = 60.0
#: Reactor lag, seconds, above which the reactor check fails.
LAG_LIMIT = 1.0
#: An AoR no account has: the store check looks it up.
HEALTH_AOR = "sip:sipxmpp-health-check@health.invalid"


@dataclass(frozen=True)
class CheckResult:
    """
    The outcome of one check: C{ok}, and one line for operators.
    """

    ok: bool
    detail: str = ""


CheckOutcome = CheckResult | bool
Check = Callable[[], "CheckOutcome | Deferred[CheckOutcome] | Deferred[Any]"]


def storeCheck(lookup: Callable[[str], Deferred[Any]]) -> Check:
    """
    The C{store} check: C{lookup} (an account directory's, run in the
    store's threads) answers for L{HEALTH_AOR}.
    """

    def check() -> Deferred[CheckResult]:
        d = lookup(HEALTH_AOR)
        return d.addCallbacks(lambda _: CheckResult(True, "a query answered"),
                              lambda f: CheckResult(False, f"query failed: "
                                                           f"{f.getErrorMessage()}"))  # fmt: skip

    return check


def xmppCheck(sessionStates: Callable[[], Mapping[str, str]], clock: IReactorTime,
              startedAt: Callable[[], float | None],
              share: float = XMPP_FAILING_SHARE, grace: float = XMPP_GRACE) -> Check:  # fmt: skip
    """
    The C{xmpp} check: at most C{share} of the sessions are failing
    (C{failed: ...} or C{reconnecting ...}); within C{grace} seconds of
    C{startedAt()} it passes whatever the share.
    """

    def check() -> CheckResult:
        states = sessionStates()
        failing = sum(1 for s in states.values() if s.startswith(("failed", "reconnecting")))
        detail = f"{failing} of {len(states)} sessions failing"
        if not states or failing / len(states) <= share:
            return CheckResult(True, detail)
        started = startedAt()
        if started is not None and clock.seconds() - started < grace:
            return CheckResult(True, detail + " (starting)")
        return CheckResult(False, detail + f" (more than {share:.0%})")

    return check


def lagCheck(lag: Callable[[], float], limit: float = LAG_LIMIT) -> Check:
    """
    The C{reactor} check: the last measured lag is below C{limit}.
    """

    def check() -> CheckResult:
        value = lag()
        return CheckResult(value < limit, f"lag {value:.3f} s (limit {limit:g} s)")

    return check


SendRequest = Callable[[bytes, Peer, Any], object]


class _Keepalive:
    """
    The transaction user of one OPTIONS keepalive.
    """

    def __init__(self, probe: UpstreamProbe, number: int) -> None:
        self.probe = probe
        self.number = number

    def transactionResponse(self, transaction: object, response: SIPResponse) -> None:
        self.probe._answered(self.number, response.code)

    def transactionTimedOut(self, transaction: object, code: int) -> None:
        self.probe._missed(self.number, f"no answer ({code})")

    def transactionTimerC(self, transaction: object) -> None:
        pass

    def transactionTerminated(self, transaction: object) -> None:
        pass


class UpstreamProbe(Service):
    """
    Sends an OPTIONS keepalive to the upstream every C{interval} seconds
    through the proxy (C{Proxy.sendRequest}); any response within
    C{timeout} seconds counts as answered, whatever its code.

    @ivar misses: keepalives in a row not answered in time.
    @ivar lastAnswer: the clock's time of the last answer, or L{None}.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, send: SendRequest, upstream: Peer, local: Peer,
                 interval: float = UPSTREAM_INTERVAL, timeout: float = UPSTREAM_TIMEOUT,
                 misses: int = UPSTREAM_MISSES) -> None:  # fmt: skip
        self.clock = clock
        self.send = send
        self.upstream = upstream
        self.local = local
        self.interval = interval
        self.timeout = timeout
        self.allowedMisses = misses
        self.misses = 0
        self.sent = 0
        self.lastAnswer: float | None = None
        self.lastProblem = ""
        self._number = 0
        self._pending: dict[int, IDelayedCall] = {}
        self._next: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._probe()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()

    def check(self) -> CheckResult:
        """
        The C{upstream} check.
        """
        where = f"{self.upstream.transport.lower()}:{self.upstream.host}:{self.upstream.port}"
        if self.misses >= self.allowedMisses:
            return CheckResult(False, f"{where}: {self.misses} keepalives in a row unanswered "
                                      f"within {self.timeout:g} s ({self.lastProblem})")
        if self.lastAnswer is None:
            return CheckResult(True, f"{where}: no answer yet ({self.sent} keepalives sent)")
        ago = self.clock.seconds() - self.lastAnswer
        return CheckResult(True, f"{where}: answered {ago:.0f} s ago")

    def request(self) -> bytes:
        """
        The next OPTIONS, without its Via (the proxy adds ours).
        """
        host = self.upstream.host
        target = f"[{host}]" if ":" in host else host
        local = f"[{self.local.host}]" if ":" in self.local.host else self.local.host
        lines = [
            f"OPTIONS sip:{target}:{self.upstream.port} SIP/2.0",
            "Max-Forwards: 70",
            f"From: <sip:sipxmpp@{local}:{self.local.port}>;tag={secrets.token_hex(6)}",
            f"To: <sip:{target}:{self.upstream.port}>",
            f"Call-ID: keepalive-{secrets.token_hex(10)}",
            "CSeq: 1 OPTIONS",
            "Accept: application/sdp",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")

    def _probe(self) -> None:
        self._next = self.clock.callLater(self.interval, self._probe)
        self._number += 1
        number = self._number
        self.sent += 1
        self._pending[number] = self.clock.callLater(self.timeout, self._missed, number,
                                                     "no answer")  # fmt: skip
        try:
            self.send(self.request(), self.upstream, _Keepalive(self, number))
        except Exception as e:
            self._missed(number, f"cannot send: {e}")

    def _answered(self, number: int, code: int) -> None:
        call = self._pending.pop(number, None)
        if call is None:
            return  # too late: already counted as missed
        if call.active():
            call.cancel()
        if self.misses >= self.allowedMisses:
            self.log.info("the upstream answers keepalives again ({code})", code=code)
        self.misses = 0
        self.lastAnswer = self.clock.seconds()

    def _missed(self, number: int, why: str) -> None:
        call = self._pending.pop(number, None)
        if call is None:
            return
        if call.active():
            call.cancel()
        self.misses += 1
        self.lastProblem = why
        if self.misses == self.allowedMisses:
            self.log.warn("the upstream left {n} keepalives in a row unanswered: {why}",
                          n=self.misses, why=why)  # fmt: skip
