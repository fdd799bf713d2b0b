"""
XEP-0108 user activity: while the user is on the phone or has a call on
hold, their activity (published with PEP, XEP-0163) is
C{talking/on_the_phone} with the call's text; once the call is over, an
empty activity says that it is.

One handler per feature, like wokkel's: L{UserActivityPublisher} sits on the
user's session beside L{sipxmpp.xmpp.publisher.UserPublisher} and is driven
by the same telephony state. The publisher adds it when C{[xmpp]
publish_activity} is on.

PEP keeps the last item on the server, across our streams and our restarts:
a call that ended while the stream was down, or before a restart, would
stay published. So on every session start the activity is published unless
the server is known to hold what is wanted already: an empty activity is
skipped only when the last one the server acknowledged was empty (a new
handler, e.g. after a restart, knows nothing and retracts).

A user the gateway no longer logs in (the phone never registers again
after a restart, or the call ended while XMPP was down and the user went
offline) would keep the call's activity: the handler tells C{onPending}
when the server may hold a call (a publish sent) and when not (an empty
activity acknowledged), the store keeps that across restarts, and the
publisher logs such users in just to retract it (a handler with
C{showCalls} off).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from sipxmpp.telephony.events import TelephonyState
from sipxmpp.xmpp.callpresence import CallTexts
from sipxmpp.xmpp.session import IXMPPSession
from sipxmpp.xmpp.wokkelcompat import subprotocols

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_ACTIVITY = "http://jabber.org/protocol/activity"

# Ringing is not talking: only these show as an activity.
TALKING = frozenset({TelephonyState.ON_THE_PHONE, TelephonyState.ON_HOLD})


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


# What the server holds is not known (nothing acknowledged yet, a publish
# out or refused).
UNKNOWN: Final = _Unknown()


class UserActivityPublisher(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    One user's activity, on that user's session.

    @ivar telephony: the latest telephony state.
    """

    log = Logger()

    def __init__(self, aor: str, session: IXMPPSession, texts: CallTexts,
                 timeout: float, showCalls: bool = True) -> None:  # fmt: skip
        """
        @param aor: the user, for the log.
        @param texts: the user's call texts (the activity's text).
        @param timeout: seconds the server may take to answer a publish.
        @param showCalls: publish calls; off, only retract (C{[xmpp]
            publish_activity} is off, and an activity of before is left).
        """
        super().__init__()
        self.aor = aor
        self.session = session
        self.texts = texts
        self.timeout = timeout
        self.showCalls = showCalls
        self.telephony = TelephonyState.ONLINE
        # Told True when the server may hold a call from now on, False once
        # it acknowledged the empty activity.
        self.onPending: Callable[[bool], object] = lambda pending: None
        # The text last published on this stream (None: the empty activity).
        self._published: str | None | _Unknown = UNKNOWN
        # What the server acknowledged last, as far as we know.
        self._confirmed: str | None | _Unknown = UNKNOWN
        self._sequence = 0

    def setTelephony(self, state: TelephonyState) -> None:
        """
        Record the user's latest telephony state and publish it if it
        changes the activity.
        """
        self.telephony = state
        self._publish()

    def connectionInitialized(self) -> None:
        # A call still going on is published again on the new stream; an
        # empty activity unless the server is known to hold one.
        self._published = None if self._confirmed is None else UNKNOWN
        self._publish()

    def wantedText(self) -> str | None:
        """
        Return the activity's text for the latest telephony state, or
        L{None} when the user is not talking.
        """
        if not self.showCalls or self.telephony not in TALKING:
            return None
        return self.texts.forState(self.telephony)

    def _publish(self) -> None:
        if not self.session.ready:
            return  # published once the session is back
        wanted = self.wantedText()
        if wanted == self._published:
            return
        iq = domish.Element((None, "iq"))
        iq["type"] = "set"
        iq.addUniqueId()
        publish = iq.addElement((NS_PUBSUB, "pubsub")).addElement("publish")
        publish["node"] = NS_ACTIVITY
        activity = publish.addElement("item").addElement((NS_ACTIVITY, "activity"))
        if wanted is not None:
            activity.addElement("talking").addElement("on_the_phone")
            activity.addElement("text", content=wanted)
        self._published = wanted
        self._confirmed = UNKNOWN
        self._sequence += 1
        sequence = self._sequence
        if wanted is not None:
            self.onPending(True)

        def published(_: object) -> None:
            if sequence == self._sequence:  # the latest publish is what is there
                self._confirmed = wanted
                if wanted is None:
                    self.onPending(False)

        def failed(f: Failure) -> None:
            self.log.info("{aor}: user activity not published: {e}",
                          aor=self.aor, e=f.getErrorMessage())  # fmt: skip

        self.session.sendRequest(iq, self.timeout).addCallbacks(published, failed)


# Users logged in only to retract a call left in their activity: at most
# this many at a time, each for at most RETRACT_TIMEOUT seconds and
# RETRACT_ATTEMPTS times per start of the gateway.
RETRACT_CONCURRENCY = 8
RETRACT_TIMEOUT = 60.0
RETRACT_ATTEMPTS = 3


class ActivityRetractions:
    """
    The users whose activity may still show a call (I{stale}), and the
    logins just to retract it: C{login(aor)} is called for a queued user
    unless C{busy(aor)} (logged in anyway, being logged in, or the
    publisher stopped), at most C{concurrency} at a time, each ended by
    L{pending} (the retraction was acknowledged), L{ended} (the login did
    not happen) or C{timeout} seconds (C{onTimedOut(aor)}).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, login: Callable[[str], object],
                 busy: Callable[[str], bool], concurrency: int = RETRACT_CONCURRENCY,
                 timeout: float = RETRACT_TIMEOUT,
                 attempts: int = RETRACT_ATTEMPTS) -> None:  # fmt: skip
        self.clock = clock
        self.login = login
        self.busy = busy
        self.concurrency = concurrency
        self.timeout = timeout
        self.attempts = attempts
        self.onTimedOut: Callable[[str], object] = lambda aor: None
        self.stale: set[str] = set()
        self._queue: dict[str, None] = {}
        self._running: dict[str, IDelayedCall] = {}
        self._tried: dict[str, int] = {}

    def add(self, aors: Iterable[str]) -> None:
        """
        C{aors} may show a call (saved before a restart): retract it.
        """
        aors = list(aors)
        if not aors:
            return
        self.stale.update(aors)
        self.log.info("{count} user(s) may still show a call in their user activity; "
                      "retracting it", count=len(aors))  # fmt: skip
        for aor in aors:
            self.queue(aor)

    def retracting(self, aor: str) -> bool:
        """
        Whether C{aor} is being logged in just to retract.
        """
        return aor in self._running

    def pending(self, aor: str, pending: bool) -> bool:
        """
        A session of C{aor} published a call (C{pending}) or got its empty
        activity acknowledged. Return whether that ended a login just to
        retract.
        """
        if pending:
            self.stale.add(aor)
            return False
        self.stale.discard(aor)
        self._tried.pop(aor, None)
        if aor not in self._running:
            return False
        self.log.info("{aor}: the call left in its user activity is retracted", aor=aor)
        self.ended(aor)
        return True

    def queue(self, aor: str) -> None:
        """
        Log C{aor} in to retract, if stale and not logged in (e.g. it was
        just logged out while XMPP was down).
        """
        if aor not in self.stale or aor in self._running or self.busy(aor):
            return  # a session of the user retracts it when it comes up
        if self._tried.get(aor, 0) >= self.attempts:
            self.log.warn("{aor}: the call left in its user activity was not retracted in "
                          "{n} attempts; trying again at the next start", aor=aor,
                          n=self.attempts)  # fmt: skip
            return
        self._queue[aor] = None
        self._next()

    def ended(self, aor: str) -> None:
        """
        The login to retract for C{aor} is over (or never happened).
        """
        timer = self._running.pop(aor, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._next()

    def stop(self) -> None:
        self._queue.clear()
        for timer in self._running.values():
            if timer.active():
                timer.cancel()
        self._running.clear()

    def _next(self) -> None:
        while self._queue and len(self._running) < self.concurrency:
            aor = next(iter(self._queue))
            del self._queue[aor]
            if aor not in self.stale or self.busy(aor):
                continue
            self._tried[aor] = self._tried.get(aor, 0) + 1
            self._running[aor] = self.clock.callLater(self.timeout, self._timedOut, aor)
            self.login(aor)

    def _timedOut(self, aor: str) -> None:
        del self._running[aor]
        self.log.warn("{aor}: the call left in its user activity was not retracted within "
                      "{timeout:g} s", aor=aor, timeout=self.timeout)  # fmt: skip
        self.onTimedOut(aor)
        self._next()
