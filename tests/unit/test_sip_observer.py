"""
Tests for L{sipxmpp.sip.core.observer.TelephonyObserver}: SIP through the proxy
core drives the telephony state machine. Sans-IO, on a L{Clock}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipxmpp.sip.core.observer import TelephonyObserver, dialogKey
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.telephony.events import Event, ITelephonyObserver, StateChange, TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine
from tests.unit.test_sip_proxy import (
    ANONYMOUS,
    PHONE,
    UPSTREAM,
    ProxyTestCase,
    anonymousInvite,
    answer,
    aorOf,
    cancelFor,
    invite,
    message,
)
from tests.unit.test_telephony_state_counts import installChecker

ALICE = "sip:alice@example.test"
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
      "m=audio 6000 RTP/AVP 0\r\n"


@implementer(ITelephonyObserver)
class Events:
    def __init__(self) -> None:
        self.changes: list[StateChange] = []

    def telephonyStateChanged(self, change: StateChange) -> None:
        self.changes.append(change)


class ObserverTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.state = TelephonyStateMachine(self.clock)
        installChecker(self.state)
        self.events = Events()
        self.state.addObserver(self.events)
        self.proxy.addObserver(TelephonyObserver(self.state, aorOf))

    def seen(self, aor: str = ALICE) -> list[Event]:
        return [c.event for c in self.events.changes if c.aor == aor]

    def call(self, branch: str = "i1", body: str = "") -> SIPRequest:
        self.receive(invite(branch=branch, body=body), PHONE)
        forwarded = [m for m, _ in self.take() if isinstance(m, SIPRequest)][0]
        return forwarded

    def inDialog(self, method: str, cseq: int, body: str = "", branch: str = "d",
                 toTag: str = "b1") -> SIPRequest:
        request = message(f"""
{method} sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}{cseq};rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: <sip:alice@example.test>;tag=a1
To: <sip:bob@example.test>;tag={toTag}
Call-ID: call-1
CSeq: {cseq} {method}
""", body)
        assert isinstance(request, SIPRequest)
        self.receive(request, PHONE)
        return [m for m, _ in self.take() if isinstance(m, SIPRequest)][0]

    def test_registration(self) -> None:
        self.registerAlice()
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ONLINE)
        self.receive(message("""
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr9;rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=f1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 2 REGISTER
Contact: *
Expires: 0
"""), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.OFFLINE])

    def test_registrationExpiresHeaderAndExpiry(self) -> None:
        self.receive(message("""
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr1;rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=f1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:5080>
"""), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 200, extra="Contact: <sip:alice@127.0.0.1:5080>\n"
                                                          "Expires: 120"), UPSTREAM)
        self.clock.advance(120 + self.state.bindingGrace)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.OFFLINE])

    def test_failedRegistrationChangesNothing(self) -> None:
        self.receive(message("""
REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKr1;rport
Max-Forwards: 70
From: <sip:alice@example.test>;tag=f1
To: <sip:alice@example.test>
Call-ID: reg-1
CSeq: 1 REGISTER
Contact: <sip:alice@127.0.0.1:5080>
"""), PHONE)
        forwarded = self.takeOne(UPSTREAM)
        self.receive(answer(forwarded.toBytes(), 401, "Unauthorized"), UPSTREAM)
        self.assertEqual(self.seen(), [])

    def test_answeredCallHoldResumeBye(self) -> None:
        self.registerAlice()
        forwarded = self.call(body=SDP)
        data = forwarded.toBytes()
        self.receive(answer(data, 180, "Ringing"), UPSTREAM)
        self.receive(answer(data, 200, extra="Session-Expires: 1800;refresher=uac"), UPSTREAM)
        hold = self.inDialog("INVITE", 2, SDP + "a=sendonly\r\n")
        self.receive(answer(hold.toBytes(), 200), UPSTREAM)
        resume = self.inDialog("INVITE", 3, SDP + "a=sendrecv\r\n")
        self.receive(answer(resume.toBytes(), 200), UPSTREAM)
        refresh = self.inDialog("UPDATE", 4)
        self.receive(answer(refresh.toBytes(), 200), UPSTREAM)
        self.inDialog("BYE", 5)
        # Alice placed the call: while it rings at the far end she is
        # already on the phone (dialling), not ringing herself.
        self.assertEqual(self.seen(), [
            Event.ONLINE, Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE, Event.HELD,
            Event.RESUMED, Event.STILL_ON_THE_PHONE, Event.ONLINE,
        ])

    def test_answeredNeverAcknowledged(self) -> None:
        """
        A 2xx forwarded to the phone and no ACK from it within 64*T1 (it
        gave up, or never got the answer): the call ends, the user is back
        online. With its ACK the call stays up.
        """
        self.registerAlice()
        forwarded = self.call()
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)
        self.clock.advance(31.9)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        self.clock.advance(0.1)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

        forwarded = self.call(branch="i2")
        self.receive(answer(forwarded.toBytes(), 200, toTag="b2"), UPSTREAM)
        self.inDialog("ACK", 1, toTag="b2")
        self.clock.advance(3600)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ON_THE_PHONE)

    def test_sessionExpiresBoundsTheCall(self) -> None:
        forwarded = self.call()
        self.receive(answer(forwarded.toBytes(), 200, extra="Session-Expires: 90"), UPSTREAM)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        self.clock.advance(90)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.OFFLINE)

    def test_busy(self) -> None:
        self.registerAlice()
        forwarded = self.call()
        self.receive(answer(forwarded.toBytes(), 486, "Busy Here"), UPSTREAM)
        self.assertEqual(self.seen(), [Event.ONLINE])

    def test_cancelledWhileRinging(self) -> None:
        self.registerAlice()
        forwarded = self.call()
        self.receive(answer(forwarded.toBytes(), 180, "Ringing"), UPSTREAM)
        self.receive(cancelFor(invite()), PHONE)
        self.receive(answer(forwarded.toBytes(), 487, "Request Terminated"), UPSTREAM)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.ON_THE_PHONE, Event.ONLINE])

    def test_forkedRinging(self) -> None:
        self.registerAlice()
        data = self.call().toBytes()
        self.receive(answer(data, 180, "Ringing", toTag="desk"), UPSTREAM)
        self.receive(answer(data, 180, "Ringing", toTag="mobile"), UPSTREAM)
        self.receive(answer(data, 200, toTag="mobile"), UPSTREAM)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        self.assertEqual(self.seen(),
                         [Event.ONLINE, Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE])
        # The desk fork's early dialog ended with the 2xx: only the answered
        # fork's BYE is needed to end the call.
        self.inDialog("BYE", 2, toTag="mobile")
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ONLINE)
        self.assertEqual(self.seen()[-1], Event.ONLINE)

    def test_timeoutEndsRinging(self) -> None:
        self.registerAlice()
        data = self.call().toBytes()
        self.receive(answer(data, 180, "Ringing"), UPSTREAM)
        self.clock.advance(181 + 32)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ONLINE)

    def test_inboundCallForCallee(self) -> None:
        self.registerAlice()
        self.receive(invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                            extra="Route: <sip:127.0.0.1:5060;lr>"), UPSTREAM)
        toPhone = self.takeOne(PHONE)
        self.receive(answer(toPhone.toBytes(), 180, "Ringing", toTag="p1"), PHONE)
        self.receive(answer(toPhone.toBytes(), 200, toTag="p1",
                            extra="Contact: <sip:alice@127.0.0.1:5080>"), PHONE)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.RINGING, Event.ON_THE_PHONE])

    def test_481EndsDialog(self) -> None:
        forwarded = self.call()
        self.receive(answer(forwarded.toBytes(), 200), UPSTREAM)
        reinvite = self.inDialog("INVITE", 2, SDP)
        self.receive(answer(reinvite.toBytes(), 481, "Call/Transaction Does Not Exist"), UPSTREAM)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.OFFLINE)


class AnonymousCallerTests(ProxyTestCase):
    """
    RFC 3323 anonymous calls are attributed to the right user: the caller
    by the registration of the phone's address, the callee by the contact
    the request goes to; no one by an identity a phone asserts.
    """

    BOB = "sip:bob@example.test"
    NOBODY = "sip:anonymous@anonymous.invalid"

    def setUp(self) -> None:
        super().setUp()
        self.state = TelephonyStateMachine(self.clock)
        installChecker(self.state)
        self.events = Events()
        self.state.addObserver(self.events)
        self.proxy.addObserver(TelephonyObserver(self.state, aorOf))

    def seen(self, aor: str = ALICE) -> list[Event]:
        return [c.event for c in self.events.changes if c.aor == aor]

    def test_anonymousCallOfTheCaller(self) -> None:
        """
        Alice's phone calls with an anonymous From (asserting Bob's
        identity): Alice is on the phone, then online after her anonymous
        BYE; neither Bob nor C{anonymous@anonymous.invalid} get any state.
        """
        self.registerAlice()
        self.receive(anonymousInvite(extra="P-Asserted-Identity: <sip:bob@example.test>"),
                     PHONE)
        forwarded = [m for m, _ in self.take() if isinstance(m, SIPRequest)][0]
        data = forwarded.toBytes()
        self.receive(answer(data, 180, "Ringing"), UPSTREAM)
        self.receive(answer(data, 200), UPSTREAM)
        self.assertEqual(self.state.stateOf(ALICE), TelephonyState.ON_THE_PHONE)
        bye = message(f"""
BYE sip:bob@127.0.0.1:5090 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKanonbye;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>
From: {ANONYMOUS}
To: <sip:bob@example.test>;tag=b1
Call-ID: call-1
CSeq: 2 BYE
""")
        assert isinstance(bye, SIPRequest)
        self.receive(bye, PHONE)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.ON_THE_PHONE,
                                       Event.STILL_ON_THE_PHONE, Event.ONLINE])
        self.assertEqual(self.seen(self.BOB), [])
        self.assertEqual(self.seen(self.NOBODY), [])

    def test_anonymousCallToTheCallee(self) -> None:
        """
        An anonymous call from the upstream is Alice's, whose contact it
        goes to; the caller's asserted identity changes no one's state.
        """
        self.registerAlice()
        request = invite(uri="sip:alice@127.0.0.1:5080", via="SIP/2.0/UDP 127.0.0.1:5070",
                         extra="Route: <sip:127.0.0.1:5060;lr>\n"
                               "P-Asserted-Identity: <sip:bob@example.test>")
        request.setHeader("From", ANONYMOUS)
        self.receive(request, UPSTREAM)
        toPhone = self.takeOne(PHONE)
        self.receive(answer(toPhone.toBytes(), 200, toTag="p1",
                            extra="Contact: <sip:alice@127.0.0.1:5080>"), PHONE)
        self.assertEqual(self.seen(), [Event.ONLINE, Event.ON_THE_PHONE])
        self.assertEqual(self.seen(self.BOB), [])
        self.assertEqual(self.seen(self.NOBODY), [])


class DialogKeyTests(SynchronousTestCase):
    def test_sameFromBothEnds(self) -> None:
        request = invite()
        response = answer(request.toBytes(), 200, toTag="b1")
        assert isinstance(response, SIPResponse)
        bye = message("""
BYE sip:alice@127.0.0.1:5080 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbye
From: <sip:bob@example.test>;tag=b1
To: <sip:alice@example.test>;tag=a1
Call-ID: call-1
CSeq: 1 BYE
""")
        self.assertEqual(dialogKey(response), dialogKey(bye))
