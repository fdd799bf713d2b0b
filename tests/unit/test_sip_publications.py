"""
Tests for L{sipxmpp.sip.core.publications}: RFC 3903 PUBLISH processing
feeding the telephony state, sans-IO on a L{Clock}.
"""

from __future__ import annotations

import ipaddress
import string
from itertools import count

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.ops.metrics import Metrics
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.publications import (
    EventStateCompositor,
    PublishAnswer,
    dialogReports,
    isOnThePhone,
)
from sipxmpp.sip.wire.dialoginfo import DialogInfo, parseDialogInfo
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.pidf import parsePresence
from sipxmpp.sip.wire.uri import SIPURI, URI
from sipxmpp.telephony.events import DialogPhase, DialogReport, Event, TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine
from tests.unit.test_sip_dialoginfo import (
    BILLION_LAUGHS,
    CALL_ID,
    HELD,
    KAMAILIO_CONFIRMED_CALLEE,
    KAMAILIO_EARLY_CALLEE,
    KAMAILIO_TERMINATED_CALLEE,
    KAMAILIO_TRYING,
    RFC4235_REJECTED,
    RFC4235_SAMPLE,
    XXE,
)
from tests.unit.test_sip_pidf import AWAY, ON_THE_PHONE
from tests.unit.test_sip_pidf import XXE as PIDF_XXE
from tests.unit.test_telephony_state import Recorder
from tests.unit.test_telephony_state_counts import installChecker

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
S = TelephonyState
DIALOG_INFO = "application/dialog-info+xml"
PIDF = "application/pidf+xml"
KAMAILIO = Peer("UDP", "192.0.2.5", 5060)
STRANGER = Peer("UDP", "198.51.100.9", 5060)
_numbers = count(1)


def aorOf(uri: URI) -> str | None:
    if isinstance(uri, SIPURI) and uri.user:
        return f"sip:{uri.user}@{uri.host.lower()}"
    return None


def publish(
    body: bytes = b"",
    *,
    uri: str = BOB,
    event: str | None = "dialog",
    contentType: str | None = DIALOG_INFO,
    ifMatch: str | None = None,
    expires: int | str | None = 43201,
) -> SIPRequest:
    """
    A PUBLISH as Kamailio's pua sends it.
    """
    number = next(_numbers)
    lines = [
        f"PUBLISH {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-pub{number}",
        "Max-Forwards: 70",
        f"From: <{uri}>;tag=pua{number}",
        f"To: <{uri}>",
        f"Call-ID: pub{number}@192.0.2.5",
        f"CSeq: {number} PUBLISH",
    ]
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if ifMatch is not None:
        lines.append(f"SIP-If-Match: {ifMatch}")
    if body and contentType is not None:
        lines.append(f"Content-Type: {contentType}")
    lines.append(f"Content-Length: {len(body)}")
    request = parseMessage(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(request, SIPRequest)
    return request


class CompositorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.machine = TelephonyStateMachine(self.clock, earlyLifetime=180)
        installChecker(self.machine)
        self.recorder = Recorder()
        self.machine.addObserver(self.recorder)
        self.metrics = Metrics()
        self.provisioned = {ALICE, BOB}
        self.compositor = EventStateCompositor(
            self.clock, self.machine, aorOf, self.provisioned.__contains__,
            ["192.0.2.0/24", "2001:db8::/32"], metrics=self.metrics,
        )  # fmt: skip

    def send(self, request: SIPRequest, source: Peer = KAMAILIO) -> PublishAnswer:
        return self.compositor.publishReceived(request, source)

    def accepted(self, request: SIPRequest) -> str:
        """
        Send C{request}, require a 200, and return the new entity-tag.
        """
        answer = self.send(request)
        self.assertEqual((answer.code, answer.reason), (200, "OK"), answer)
        etag = answer.header("SIP-ETag")
        assert etag is not None
        return etag


class KamailioTests(CompositorTestCase):
    """
    One call from alice to bob as pua_dialoginfo publishes it.
    """

    def test_calleeCall(self) -> None:
        etag = self.accepted(publish(KAMAILIO_EARLY_CALLEE))
        self.assertEqual(self.machine.stateOf(BOB), S.RINGING)
        etag2 = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, ifMatch=etag))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.assertNotEqual(etag2, etag)
        answer = self.send(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch=etag2, expires=11))
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("Expires"), "11")
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.assertEqual(self.recorder.events(BOB),
                         [Event.RINGING, Event.ON_THE_PHONE, Event.OFFLINE])  # fmt: skip
        self.assertEqual(len(self.compositor), 1)
        self.clock.advance(11)
        self.assertEqual(len(self.compositor), 0)

    def test_callerCall(self) -> None:
        """
        The caller's "Trying" (no tags) and "early" (with tags) are one
        dialog: dialling shows as on the phone, and "terminated" ends it.
        """
        etag = self.accepted(publish(KAMAILIO_TRYING, uri=ALICE))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        early = KAMAILIO_TRYING.replace(b"<state>Trying</state>", b"<state>early</state>")
        early = early.replace(b'direction="initiator"',
                              b'local-tag="as6fa2c9b0" remote-tag="7c4e2bd1" direction="initiator"')
        etag = self.accepted(publish(early, uri=ALICE, ifMatch=etag))
        confirmed = KAMAILIO_TRYING.replace(b"Trying", b"confirmed")
        etag = self.accepted(publish(confirmed, uri=ALICE, ifMatch=etag))
        terminated = KAMAILIO_TRYING.replace(b"Trying", b"terminated")
        self.accepted(publish(terminated, uri=ALICE, ifMatch=etag, expires=10))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)
        self.assertEqual(self.recorder.events(ALICE), [
            Event.ON_THE_PHONE, Event.STILL_ON_THE_PHONE, Event.STILL_ON_THE_PHONE,
            Event.OFFLINE,
        ])  # fmt: skip

    def test_refreshKeepsTheCall(self) -> None:
        """
        pua refreshes with SIP-If-Match and no body: the call stays and
        lives for the new lifetime from now.
        """
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, expires=600))
        self.clock.advance(500)
        answer = self.send(publish(ifMatch=etag, expires=600))
        self.assertEqual(answer.header("Expires"), "600")
        self.assertNotIn(answer.header("SIP-ETag"), (None, etag))
        self.clock.advance(599)
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_publisherDies(self) -> None:
        """
        Without refreshes the publication expires and takes the call with
        it; its entity-tag is then unknown.
        """
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        self.clock.advance(3599)
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.clock.advance(1)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.assertEqual(len(self.compositor), 0)
        self.assertEqual(self.send(publish(ifMatch=etag)).code, 412)

    def test_afterRestartPublishesAfresh(self) -> None:
        """
        A publisher whose entity-tag we do not know (we restarted) gets 412,
        publishes afresh, and the call it reports then ends as it should.
        """
        self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        self.assertEqual(self.send(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch="x1")).code, 412)
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.accepted(publish(KAMAILIO_TERMINATED_CALLEE, expires=11))
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_confirmedWhileRinging(self) -> None:
        """
        With PRACK, pua reports "confirmed" while the phone still rings:
        on the phone, and the "terminated" of the unanswered call ends it.
        """
        etag = self.accepted(publish(KAMAILIO_EARLY_CALLEE))
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, ifMatch=etag))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.accepted(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch=etag, expires=10))
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)


class OperationTests(CompositorTestCase):
    """
    RFC 3903 §6: initial, refresh, modify, remove, and their refusals.
    """

    def test_initialAnswer(self) -> None:
        request = publish(KAMAILIO_EARLY_CALLEE)
        answer = self.send(request)
        etag = answer.header("SIP-ETag")
        assert etag is not None
        self.assertEqual(answer.header("Expires"), "3600")  # 43201 lowered to the maximum
        response = answer.response(request)
        self.assertIsInstance(response, SIPResponse)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.getHeader("SIP-ETag"), etag)
        self.assertEqual(response.expires, 3600)
        self.assertEqual(response.callID, request.callID)
        self.assertEqual(response.cseq, request.cseq)
        self.assertIsNotNone(response.toTag)

    def test_entityTagsUnguessable(self) -> None:
        tags = {self.accepted(publish(KAMAILIO_EARLY_CALLEE)) for _ in range(200)}
        self.assertEqual(len(tags), 200)
        allowed = set(string.ascii_letters + string.digits + "-_")
        for tag in tags:
            self.assertGreaterEqual(len(tag), 22)
            self.assertLessEqual(set(tag), allowed)

    def test_modify(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        etag = self.accepted(publish(HELD, ifMatch=etag))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_HOLD)
        # Full state: the Kamailio dialog is no longer listed, so it ended.
        self.assertEqual(len(self.machine._users[BOB].dialogs), 1)
        # Partial state: the held dialog it does not list stays.
        self.accepted(publish(RFC4235_REJECTED, ifMatch=etag))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_HOLD)

    def test_remove(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        answer = self.send(publish(ifMatch=etag, expires=0))
        self.assertEqual((answer.code, answer.headers), (200, (("Expires", "0"),)))
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.assertEqual(len(self.compositor), 0)
        # Both expiry timers (ours and the state machine's) are gone; only
        # the ended dialog's tombstone is left.
        self.assertEqual([c.func.__name__ for c in self.clock.getDelayedCalls()], ["_forget"])
        self.assertEqual(self.send(publish(ifMatch=etag, expires=0)).code, 412)

    def test_removeIgnoresBody(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        answer = self.send(publish(b"not xml", ifMatch=etag, expires=0))
        self.assertEqual(answer.code, 200)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_initialWithZeroExpiresKeepsNothing(self) -> None:
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, expires=0))
        self.assertEqual((answer.code, answer.header("Expires")), (200, "0"))
        self.assertEqual(len(self.compositor), 0)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_unknownEntityTag(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        for request in (
            publish(ifMatch="nope"),
            publish(ifMatch=etag, uri=ALICE),  # another user's
            publish(ifMatch=etag, event="presence"),  # another event's
            publish(KAMAILIO_TERMINATED_CALLEE, ifMatch="nope"),
        ):
            answer = self.send(request)
            self.assertEqual((answer.code, answer.reason), (412, "Conditional Request Failed"))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.accepted(publish(ifMatch=f"  {etag} "))

    def test_expiresBounds(self) -> None:
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, expires=9))
        self.assertEqual((answer.code, answer.reason), (423, "Interval Too Brief"))
        self.assertEqual(answer.header("Min-Expires"), "10")
        self.assertEqual(answer.response(publish(expires=9)).getHeader("Min-Expires"), "10")
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.assertEqual(self.send(publish(KAMAILIO_EARLY_CALLEE, expires=10)).header("Expires"),
                         "10")  # fmt: skip
        self.assertEqual(self.send(publish(KAMAILIO_EARLY_CALLEE, expires=None)).header("Expires"),
                         "3600")  # fmt: skip

    def test_refreshBelowMinimum(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        self.assertEqual(self.send(publish(ifMatch=etag, expires=1)).code, 423)
        self.accepted(publish(ifMatch=etag, expires=60))

    def test_malformedExpires(self) -> None:
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, expires="soon"))
        self.assertEqual(answer.code, 400)
        self.assertEqual(len(self.compositor), 0)

    def test_initialWithoutBody(self) -> None:
        answer = self.send(publish())
        self.assertEqual((answer.code, answer.reason), (400, "Initial PUBLISH without a body"))

    def test_badEvent(self) -> None:
        for event in ("message-summary", None, "", "presence.winfo"):
            answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, event=event))
            self.assertEqual((answer.code, answer.reason), (489, "Bad Event"), event)
            self.assertEqual(answer.header("Allow-Events"), "dialog, presence")
        self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, event="Dialog;call-id=x"))

    def test_compactEventHeader(self) -> None:
        request = publish(KAMAILIO_CONFIRMED_CALLEE, event=None)
        request.addHeader("o", "dialog")
        self.accepted(request)

    def test_unsupportedMediaType(self) -> None:
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, contentType="application/pidf+xml"))
        self.assertEqual((answer.code, answer.header("Accept")), (415, DIALOG_INFO))
        answer = self.send(publish(ON_THE_PHONE, event="presence", contentType=DIALOG_INFO))
        self.assertEqual((answer.code, answer.header("Accept")), (415, PIDF))
        answer = self.send(publish(ON_THE_PHONE, event="presence", contentType=None))
        self.assertEqual(answer.code, 415)
        self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE,
                              contentType="Application/Dialog-Info+XML;charset=UTF-8"))


class RestartTests(CompositorTestCase):
    """
    Publications saved before a restart (the state machine's snapshot)
    are found again by the entity-tag their publisher holds.
    """

    def restart(self) -> None:
        snapshots = self.machine.snapshots()
        clock = Clock()
        clock.advance(self.clock.seconds())
        self.clock = clock
        self.machine = TelephonyStateMachine(clock, earlyLifetime=180)
        installChecker(self.machine)
        self.compositor = EventStateCompositor(
            clock, self.machine, aorOf, self.provisioned.__contains__, ["192.0.2.0/24"])
        for snapshot in snapshots:
            self.machine.restore(snapshot)
            for p in self.machine.snapshot(snapshot.aor).publications:
                self.assertTrue(self.compositor.restore(snapshot.aor, p.publication, p.tag,
                                                        p.expiresAt))  # fmt: skip

    def test_callGoesOnAfterRestart(self) -> None:
        etag = self.accepted(publish(KAMAILIO_EARLY_CALLEE))
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, ifMatch=etag))
        self.clock.advance(30)
        self.restart()
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.assertEqual(len(self.compositor), 1)
        answer = self.send(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch=etag, expires=11))
        self.assertEqual(answer.code, 200)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_restoredExpires(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE, expires=100))
        self.clock.advance(60)
        self.restart()
        self.clock.advance(40)
        self.assertEqual(len(self.compositor), 0)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)
        self.assertEqual(self.send(publish(ifMatch=etag)).code, 412)

    def test_refusesWhatIsNotOurs(self) -> None:
        self.assertFalse(self.compositor.restore(BOB, ("subscribe", 1), "e", 100))
        self.assertFalse(self.compositor.restore(BOB, ("dialog", "k"), "e", 0))
        self.assertTrue(self.compositor.restore(BOB, ("dialog", "k"), "e", 100))
        self.assertFalse(self.compositor.restore(BOB, ("dialog", "k"), "e", 100))


class BadBodyTests(CompositorTestCase):
    """
    A body that does not parse is 400 and changes nothing.
    """

    def test_malformedKeepsEarlierState(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        for body in (b"<dialog-info", b"\x00\x01", KAMAILIO_CONFIRMED_CALLEE[:100],
                     RFC4235_SAMPLE.replace(b"confirmed", b"on-hold")):
            answer = self.send(publish(body, ifMatch=etag))
            self.assertEqual(answer.code, 400)
            self.assertTrue(answer.reason.startswith("dialog-info: "), answer.reason)
            answer.response(publish())  # the reason phrase is fit to send
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        # The publication and its entity-tag are as they were.
        self.accepted(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch=etag, expires=11))
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)

    def test_attacksRefused(self) -> None:
        for body, event, contentType in ((BILLION_LAUGHS, "dialog", DIALOG_INFO),
                                         (XXE, "dialog", DIALOG_INFO),
                                         (PIDF_XXE, "presence", PIDF)):
            answer = self.send(publish(body, event=event, contentType=contentType))
            self.assertEqual(answer.code, 400)
            self.assertIn("a DTD is not allowed", answer.reason)
        self.assertEqual(len(self.compositor), 0)
        self.assertEqual(self.machine.stateOf(BOB), S.OFFLINE)


class PolicyTests(CompositorTestCase):
    """
    Who may publish, and for whom.
    """

    def test_notProvisioned(self) -> None:
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, uri="sip:carol@example.test"))
        self.assertEqual((answer.code, answer.reason), (404, "Not Found"))
        answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, uri="tel:+15551234"))
        self.assertEqual(answer.code, 404)
        self.assertEqual(self.machine.users(), {})

    def test_provisionedLater(self) -> None:
        self.provisioned.discard(BOB)
        self.assertEqual(self.send(publish(KAMAILIO_CONFIRMED_CALLEE)).code, 404)
        self.provisioned.add(BOB)
        self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))

    def test_provisioningFailure(self) -> None:
        def broken(aor: str) -> bool:
            raise RuntimeError("store is down")

        compositor = EventStateCompositor(self.clock, self.machine, aorOf, broken, ["0.0.0.0/0"])
        answer = compositor.publishReceived(publish(KAMAILIO_CONFIRMED_CALLEE), KAMAILIO)
        self.assertEqual(answer.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_forbiddenSource(self) -> None:
        """
        A stranger learns nothing, not even whether the user exists.
        """
        for uri in (BOB, "sip:carol@example.test"):
            answer = self.send(publish(KAMAILIO_CONFIRMED_CALLEE, uri=uri), STRANGER)
            self.assertEqual((answer.code, answer.reason), (403, "Forbidden"))
        self.assertEqual(self.send(publish(KAMAILIO_CONFIRMED_CALLEE),
                                   Peer("UDP", "not-an-address", 5060)).code, 403)  # fmt: skip
        self.assertEqual(self.machine.users(), {})

    def test_allowedSources(self) -> None:
        for source in (Peer("TCP", "192.0.2.200", 40000), Peer("UDP", "2001:db8::5", 5060),
                       Peer("UDP", "::ffff:192.0.2.9", 5060)):
            answer = self.compositor.publishReceived(publish(KAMAILIO_EARLY_CALLEE), source)
            self.assertEqual(answer.code, 200, source)

    def test_allowsRemembered(self) -> None:
        """
        The answer per host is remembered, and asked again once the allowed
        networks are another tuple.
        """
        self.assertTrue(self.compositor.allows("192.0.2.7"))
        self.assertFalse(self.compositor.allows("198.51.100.1"))
        self.assertFalse(self.compositor.allows("not-an-address"))
        self.assertTrue(self.compositor.allows("192.0.2.7"))
        self.assertFalse(self.compositor.allows("198.51.100.1"))
        self.compositor.publishers = (ipaddress.ip_network("198.51.100.0/24"),)
        self.assertFalse(self.compositor.allows("192.0.2.7"))
        self.assertTrue(self.compositor.allows("198.51.100.1"))

    def test_allowsBounded(self) -> None:
        """
        No more than a bounded number of hosts are remembered.
        """
        for n in range(3000):
            self.compositor.allows(f"10.{n >> 8}.{n & 255}.1")
        self.assertLessEqual(len(self.compositor._allows), 1024)
        self.assertTrue(self.compositor.allows("192.0.2.7"))

    def test_noPublishers(self) -> None:
        compositor = EventStateCompositor(self.clock, self.machine, aorOf,
                                          self.provisioned.__contains__, [])  # fmt: skip
        self.assertEqual(compositor.publishReceived(publish(KAMAILIO_CONFIRMED_CALLEE),
                                                    KAMAILIO).code, 403)  # fmt: skip


class PresenceTests(CompositorTestCase):
    def test_rpidOnThePhone(self) -> None:
        etag = self.accepted(publish(ON_THE_PHONE, uri=ALICE, event="presence", contentType=PIDF))
        self.assertEqual(self.machine.stateOf(ALICE), S.ON_THE_PHONE)
        self.accepted(publish(AWAY, uri=ALICE, event="presence", contentType=PIDF, ifMatch=etag))
        self.assertEqual(self.machine.stateOf(ALICE), S.OFFLINE)

    def test_sourcesAggregate(self) -> None:
        """
        A dialog publication, a presence publication and the proxy's own
        observation of one user make one state.
        """
        self.machine.bindingUpdated(BOB, "desk", 3600)
        self.machine.dialogEarly(BOB, ("observed", "a", "b"))
        dialog = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        presence = self.accepted(publish(ON_THE_PHONE, event="presence", contentType=PIDF))
        self.accepted(publish(KAMAILIO_TERMINATED_CALLEE, ifMatch=dialog, expires=11))
        self.assertEqual(self.machine.stateOf(BOB), S.ON_THE_PHONE)
        self.assertEqual(self.send(publish(ifMatch=presence, event="presence", expires=0)).code,
                         200)  # fmt: skip
        self.assertEqual(self.machine.stateOf(BOB), S.RINGING)
        self.machine.dialogTerminated(BOB, ("observed", "a", "b"))
        self.assertEqual(self.machine.stateOf(BOB), S.ONLINE)


class MappingTests(SynchronousTestCase):
    def test_dialogReports(self) -> None:
        self.assertEqual(dialogReports(parseDialogInfo(KAMAILIO_TRYING)),
                         (DialogReport((CALL_ID, CALL_ID), DialogPhase.EARLY, True),))  # fmt: skip
        self.assertEqual(dialogReports(parseDialogInfo(KAMAILIO_EARLY_CALLEE)),
                         (DialogReport((CALL_ID, CALL_ID), DialogPhase.EARLY, False),))  # fmt: skip
        self.assertEqual(dialogReports(parseDialogInfo(HELD)),
                         (DialogReport(("c1", "d1"), DialogPhase.HELD),))  # fmt: skip
        self.assertEqual(dialogReports(parseDialogInfo(RFC4235_SAMPLE)),
                         (DialogReport((None, "123456"), DialogPhase.CONFIRMED),))  # fmt: skip
        self.assertEqual(
            dialogReports(parseDialogInfo(RFC4235_REJECTED)),
            (DialogReport(("a84b4c76e66710", "as7d900as8"), DialogPhase.TERMINATED, True),),
        )
        self.assertEqual(dialogReports(DialogInfo(0, True, None, ())), ())

    def test_isOnThePhone(self) -> None:
        self.assertTrue(isOnThePhone(parsePresence(ON_THE_PHONE)))
        self.assertFalse(isOnThePhone(parsePresence(AWAY)))
        busy = ON_THE_PHONE.replace(b"on-the-phone", b"busy")
        self.assertTrue(isOnThePhone(parsePresence(busy)))


class ConstructionTests(CompositorTestCase):
    def test_bounds(self) -> None:
        for low, default, high in ((0, 60, 60), (60, 30, 3600), (10, 7200, 3600)):
            self.assertRaises(ValueError, EventStateCompositor, self.clock, self.machine,
                              aorOf, bool, [], minExpires=low, defaultExpires=default,
                              maxExpires=high)  # fmt: skip
        self.assertRaises(ValueError, EventStateCompositor, self.clock, self.machine, aorOf,
                          bool, ["not a network"])  # fmt: skip

    def test_notPublish(self) -> None:
        request = parseMessage(
            b"OPTIONS sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: 1\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        assert isinstance(request, SIPRequest)
        self.assertRaises(ValueError, self.compositor.publishReceived, request, KAMAILIO)

    def test_metrics(self) -> None:
        etag = self.accepted(publish(KAMAILIO_CONFIRMED_CALLEE))
        self.send(publish(ifMatch="nope"))
        self.send(publish(KAMAILIO_CONFIRMED_CALLEE, event="message-summary"))
        self.send(publish(KAMAILIO_CONFIRMED_CALLEE), STRANGER)
        value = self.metrics.value
        self.assertEqual(value("sipxmpp_sip_publish_total", code="200", event="dialog"), 1)
        self.assertEqual(value("sipxmpp_sip_publish_total", code="412", event="dialog"), 1)
        self.assertEqual(value("sipxmpp_sip_publish_total", code="489", event="other"), 1)
        self.assertEqual(value("sipxmpp_sip_publish_total", code="403", event="other"), 1)
        self.assertIn("sipxmpp_sip_publications 1", self.metrics.render())
        self.accepted(publish(ifMatch=etag))
