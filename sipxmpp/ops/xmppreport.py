"""
What the XMPP side did, for operators: the C{sipxmpp_xmpp_*} metrics and
each user's last events on the status page.

L{XMPPReport} provides the XMPP package's L{IXMPPReport}; C{tap.py} hands
it to the publisher. Every call is a few dict operations on the reactor
thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from sipxmpp.ops.metrics import Metrics
from sipxmpp.xmpp.session import IXMPPReport

#: Events kept per user for the status page.
EVENTS_PER_USER = 10
#: Upper bounds of the presence latency histogram, seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The session states counted by C{sipxmpp_xmpp_sessions}.
SESSION_STATES = ("stopped", "connecting", "authenticating", "connected", "resuming",
                  "reconnecting", "failed")  # fmt: skip


@dataclass(frozen=True)
class UserEvent:
    """
    One line of a user's history: when (the clock's seconds) and what.
    """

    time: float
    text: str


def sessionStateKind(state: str) -> str:
    """
    Return the first word of a session state (C{"failed: why"} gives
    C{"failed"}): the label of C{sipxmpp_xmpp_sessions}.
    """
    return state.split(":", 1)[0].strip() or "unknown"


def countSessions(states: Mapping[str, str]) -> dict[str, float]:
    """
    Count sessions per L{sessionStateKind}, every known kind present.
    """
    counts: dict[str, float] = dict.fromkeys(SESSION_STATES, 0)
    for state in states.values():
        kind = sessionStateKind(state)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@implementer(IXMPPReport)
class XMPPReport:
    """
    Counts XMPP events into a L{Metrics} registry and keeps each user's
    last L{EVENTS_PER_USER} events.

    @param sessionStates: each logged-in user's session state (the
        publisher's C{sessionStates}), sampled for C{sipxmpp_xmpp_sessions}.
    """

    def __init__(self, clock: IReactorTime, metrics: Metrics,
                 sessionStates: Callable[[], Mapping[str, str]] = dict) -> None:  # fmt: skip
        self._clock = clock
        self._metrics = metrics
        self._events: dict[str, deque[UserEvent]] = {}
        # Users whose lost stream is being resumed (XEP-0198): its end is a
        # resumption, not a login, and a failure to resume no new disconnect.
        self._resuming: set[str] = set()
        metrics.labeledGauge("sipxmpp_xmpp_sessions", "state",
                             lambda: countSessions(sessionStates()),
                             "XMPP sessions of logged-in users, by state.")  # fmt: skip
        metrics.describe("sipxmpp_xmpp_logins_total", "Successful XMPP logins.")
        metrics.describe("sipxmpp_xmpp_login_failures_total",
                         "XMPP logins that failed for a reason retrying will not fix soon.")
        metrics.describe("sipxmpp_xmpp_disconnects_total",
                         "XMPP sessions lost (the gateway reconnects or resumes).")
        metrics.describe("sipxmpp_xmpp_resumptions_total",
                         "Lost XMPP streams resumed (XEP-0198) instead of logging in again.")
        metrics.describe("sipxmpp_xmpp_commands_sent_total",
                         "Remote-control commands (XEP-0146) sent to users' clients.")
        metrics.describe("sipxmpp_xmpp_command_results_total",
                         "Answers to remote-control commands: answered, refused, timeout, lost.")
        metrics.describe("sipxmpp_xmpp_fallbacks_total",
                         "Calls of remote-control users shown on the gateway's own resource.")
        metrics.describe("sipxmpp_xmpp_restores_total",
                         "Clients whose status was put back after a call.")
        metrics.histogram("sipxmpp_xmpp_presence_latency_seconds", LATENCY_BUCKETS,
                          "From a telephony change to the presence that shows it.")
        for via in ("own-resource", "client"):
            metrics.startSeries("sipxmpp_xmpp_presence_latency_seconds", via=via)
        for counter in ("logins", "disconnects", "resumptions", "fallbacks", "restores"):
            metrics.increment(f"sipxmpp_xmpp_{counter}_total", 0)

    def events(self, aor: str) -> list[UserEvent]:
        """
        Return C{aor}'s last events, oldest first.
        """
        return list(self._events.get(aor, ()))

    def _event(self, aor: str, text: str) -> None:
        history = self._events.get(aor)
        if history is None:
            history = self._events[aor] = deque(maxlen=EVENTS_PER_USER)
        history.append(UserEvent(self._clock.seconds(), text))

    # -- IXMPPReport -------------------------------------------------------

    def sessionStateChanged(self, aor: str, state: str, reason: str | None) -> None:
        kind = sessionStateKind(state)
        wasResuming = aor in self._resuming
        self._resuming.discard(aor)
        if kind == "connected" and wasResuming:
            self._metrics.increment("sipxmpp_xmpp_resumptions_total")
        elif kind == "connected":
            self._metrics.increment("sipxmpp_xmpp_logins_total")
        elif kind == "resuming":
            self._resuming.add(aor)
            self._metrics.increment("sipxmpp_xmpp_disconnects_total")
        elif kind == "failed":
            self._metrics.increment("sipxmpp_xmpp_login_failures_total",
                                    reason=reason or "other")  # fmt: skip
        elif kind == "reconnecting" and not wasResuming:
            self._metrics.increment("sipxmpp_xmpp_disconnects_total")
        self._event(aor, f"XMPP session {state}")

    def telephonyChanged(self, aor: str, state: str) -> None:
        self._event(aor, f"telephony {state}")

    def commandSent(self, aor: str, command: str, target: str) -> None:
        self._metrics.increment("sipxmpp_xmpp_commands_sent_total", command=command)
        self._event(aor, f"{command} sent to {target}")

    def commandResult(self, aor: str, command: str, result: str) -> None:
        self._metrics.increment("sipxmpp_xmpp_command_results_total", command=command,
                                result=result)  # fmt: skip
        self._event(aor, f"{command}: {result}")

    def fallback(self, aor: str) -> None:
        self._metrics.increment("sipxmpp_xmpp_fallbacks_total")
        self._event(aor, "call shown on the gateway's own resource (fallback)")

    def restored(self, aor: str, target: str) -> None:
        self._metrics.increment("sipxmpp_xmpp_restores_total")
        self._event(aor, f"status of {target} restored")

    def presenceSent(self, aor: str, latency: float, via: str) -> None:
        self._metrics.observe("sipxmpp_xmpp_presence_latency_seconds", max(0.0, latency),
                              via=via)  # fmt: skip
        self._event(aor, f"presence shown via {via} after {latency:.3f} s")
