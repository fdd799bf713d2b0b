"""
Overload detection: how late the reactor runs a short periodic timer.

A single reactor serves every SIP message. Offered more than it can
handle, the gateway falls behind, requests and responses wait in the
socket buffer past the peers' retransmission timers, and the
retransmissions add to the load: calls already up suffer with the new
ones. While the reactor is late the proxy turns new calls away with 503
and a Retry-After (RFC 3261 §21.5.4) and keeps serving the calls it has.

A single long pause (a garbage collection) is not overload: it takes two
late samples in a row to enter the state, and one sample on time (less
than half the threshold late) to leave it.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sipxmpp.ops.metrics import Metrics

#: Seconds between two samples.
SAMPLE_INTERVAL = 0.05
# Late samples in a row that mean overload.
_LATE_SAMPLES = 2


class LagMonitor(Service):
    """
    Samples the reactor's lag every L{SAMPLE_INTERVAL} seconds.

    @param clock: the reactor whose lag is measured.
    @param threshold: seconds of lag that count as late; 0 disables the
        monitor (L{isOverloaded} is then always false).
    @ivar lag: the last measured lag, seconds.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, threshold: float, metrics: Metrics) -> None:
        self._clock = clock
        self.threshold = threshold
        self._metrics = metrics
        self.lag = 0.0
        self._late = 0
        self._overloaded = False
        self._due = 0.0
        self._call: IDelayedCall | None = None
        metrics.gauge("sipxmpp_reactor_lag_seconds", lambda: self.lag,
                      "How late the reactor ran the last overload sample.")
        metrics.gauge("sipxmpp_sip_overloaded", lambda: 1 if self.isOverloaded() else 0,
                      "1 while new calls are refused with 503 (overload).")
        metrics.describe("sipxmpp_sip_overload_episodes_total",
                         "Times the gateway entered overload.")

    def startService(self) -> None:
        super().startService()
        if self.threshold > 0:
            self._schedule()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._overloaded = False

    def isOverloaded(self) -> bool:
        """
        Should new calls be refused now?
        """
        return self._overloaded

    def _schedule(self) -> None:
        self._due = self._clock.seconds() + SAMPLE_INTERVAL
        self._call = self._clock.callLater(SAMPLE_INTERVAL, self._sample)

    def _sample(self) -> None:
        self.lag = lag = max(0.0, self._clock.seconds() - self._due)
        self._late = self._late + 1 if lag >= self.threshold else 0
        if not self._overloaded and self._late >= _LATE_SAMPLES:
            self._overloaded = True
            self._metrics.increment("sipxmpp_sip_overload_episodes_total")
            self.log.warn("overloaded: the reactor runs {lag:.3f} s late; new calls get 503",
                          lag=lag)
        elif self._overloaded and lag < self.threshold / 2:
            self._overloaded = False
            self.log.info("no longer overloaded (reactor {lag:.3f} s late)", lag=lag)
        self._schedule()
