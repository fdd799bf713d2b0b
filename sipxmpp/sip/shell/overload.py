"""
Overload detection: how full the UDP receive buffers are, and how late the
reactor runs a short periodic timer.

A single reactor serves every SIP message. Offered more than it can
handle, the gateway falls behind, requests and responses wait in the
socket buffer past the peers' retransmission timers, and the
retransmissions add to the load: calls already up suffer with the new
ones. While it is behind, the proxy turns new calls away with 503 and a
Retry-After (RFC 3261 §21.5.4) and keeps serving the calls it has.

The backlog in the socket buffers is the main signal: the reactor reads a
bounded batch from a socket between two rounds of timers, so its lag stays
small while datagrams queue up behind (measured: 0 overload samples by lag
while 7939 datagrams were dropped). The lag still tells when the reactor
itself is starved (a stream connection flooding it, the CPU taken by
something else).

A single long pause (a garbage collection) is not overload: it takes two
samples in a row over a threshold to enter the state, and one sample under
half of each threshold to leave it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sipxmpp.sip.core.metrics import IMetrics

#: Seconds between two samples.
SAMPLE_INTERVAL = 0.05
# Late samples in a row that mean overload.
_LATE_SAMPLES = 2


class OverloadMonitor(Service):
    """
    Samples the receive backlog and the reactor's lag every
    L{SAMPLE_INTERVAL} seconds.

    @param clock: the reactor whose lag is measured.
    @param lagThreshold: seconds of lag that count as behind; 0 ignores
        the lag.
    @param backlogThreshold: the fraction of a receive buffer in use that
        counts as behind; 0 ignores the backlog.
    @param backlog: the fraction of the fullest receive buffer in use.
    @ivar lag: the last measured lag, seconds.
    @ivar fill: the last measured backlog fraction.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, lagThreshold: float, backlogThreshold: float,
                 backlog: Callable[[], float], metrics: IMetrics) -> None:
        self._clock = clock
        self.lagThreshold = lagThreshold
        self.backlogThreshold = backlogThreshold
        self._backlog = backlog
        self._metrics = metrics
        self.lag = 0.0
        self.fill = 0.0
        self._late = 0
        self._overloaded = False
        self._due = 0.0
        self._call: IDelayedCall | None = None
        metrics.gauge("sipxmpp_reactor_lag_seconds", lambda: self.lag,
                      "How late the reactor ran the last overload sample.")
        metrics.gauge("sipxmpp_sip_receive_backlog_ratio", lambda: self.fill,
                      "The fullest UDP receive buffer's fill, at the last sample.")
        metrics.gauge("sipxmpp_sip_overloaded", lambda: 1 if self.isOverloaded() else 0,
                      "1 while new calls are refused with 503 (overload).")
        metrics.describe("sipxmpp_sip_overload_episodes_total",
                         "Times the gateway entered overload.")

    def startService(self) -> None:
        super().startService()
        if self.lagThreshold > 0 or self.backlogThreshold > 0:
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

    def _over(self, value: float, threshold: float, share: float = 1.0) -> bool:
        return threshold > 0 and value >= threshold * share

    def _sample(self) -> None:
        self.lag = lag = max(0.0, self._clock.seconds() - self._due)
        self.fill = fill = self._backlog()
        behind = (self._over(lag, self.lagThreshold)
                  or self._over(fill, self.backlogThreshold))
        self._late = self._late + 1 if behind else 0
        if not self._overloaded and self._late >= _LATE_SAMPLES:
            self._overloaded = True
            self._metrics.increment("sipxmpp_sip_overload_episodes_total")
            self.log.warn("overloaded (receive buffer {fill:.0%} full, reactor {lag:.3f} s "
                          "late): new calls get 503", fill=fill, lag=lag)
        elif self._overloaded and not (self._over(lag, self.lagThreshold, 0.5)
                                       or self._over(fill, self.backlogThreshold, 0.5)):
            self._overloaded = False
            self.log.info("no longer overloaded (receive buffer {fill:.0%} full, reactor "
                          "{lag:.3f} s late)", fill=fill, lag=lag)
        self._schedule()
