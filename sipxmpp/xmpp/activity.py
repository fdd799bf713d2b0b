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
"""

from __future__ import annotations

from typing import Final

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
                 timeout: float) -> None:  # fmt: skip
        """
        @param aor: the user, for the log.
        @param texts: the user's call texts (the activity's text).
        @param timeout: seconds the server may take to answer a publish.
        """
        super().__init__()
        self.aor = aor
        self.session = session
        self.texts = texts
        self.timeout = timeout
        self.telephony = TelephonyState.ONLINE
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
        return self.texts.forState(self.telephony) if self.telephony in TALKING else None

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

        def published(_: object) -> None:
            if sequence == self._sequence:  # the latest publish is what is there
                self._confirmed = wanted

        def failed(f: Failure) -> None:
            self.log.info("{aor}: user activity not published: {e}",
                          aor=self.aor, e=f.getErrorMessage())  # fmt: skip

        self.session.sendRequest(iq, self.timeout).addCallbacks(published, failed)
