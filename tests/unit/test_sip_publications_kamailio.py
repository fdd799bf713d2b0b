"""
Replays of the PUBLISH sequences Kamailio's pua_dialoginfo really sent
(C{tests/data/kamailio-pua/}, see its README) through an
L{EventStateCompositor} feeding a L{TelephonyStateMachine}, on a L{Clock}.

Each captured C{SIP-If-Match} names an entity-tag of the stub presence
server that received the capture (C{answers.txt}); the replay rewrites it to
the entity-tag our compositor gave for the same PUBLISH, so the sequence of
creations, modifications and refreshes is the one pua made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.publications import EventStateCompositor
from sipxmpp.sip.wire.message import SIPRequest
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.uri import SIPURI, URI
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine
from tests.unit.test_telephony_state_counts import ChainRecorder, installChecker

DATA = Path(__file__).resolve().parent.parent / "data" / "kamailio-pua"
ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
S = TelephonyState
# Abbreviations for the expected (alice, bob) states.
ON = S.ON_THE_PHONE
RINGING = S.RINGING
IDLE = S.ONLINE  # both phones are registered throughout

_IF_MATCH = re.compile(rb"^(SIP-If-Match:[ \t]*)([^\r\n]*?)([ \t]*\r?\n)",
                       re.IGNORECASE | re.MULTILINE)  # fmt: skip
_VIA = re.compile(rb"^Via:[ \t]*SIP/2\.0/(\w+)[ \t]+([^:;\s]+):(\d+)",
                  re.IGNORECASE | re.MULTILINE)  # fmt: skip


def aorOf(uri: URI) -> str | None:
    if isinstance(uri, SIPURI) and uri.user:
        return f"sip:{uri.user}@{uri.host.lower()}"
    return None


def answers(folder: str) -> list[tuple[str, str, int]]:
    """
    The lines of a folder's C{answers.txt}: file, stub entity-tag, Expires.
    """
    result = []
    for line in (DATA / folder / "answers.txt").read_text().splitlines():
        if line.strip():
            name, etag, expires = line.split()
            result.append((name, etag, int(expires)))
    return result


def source(data: bytes) -> Peer:
    """
    The publisher, from the (only) Via of a captured PUBLISH.
    """
    match = _VIA.search(data)
    assert match is not None, data[:200]
    transport, host, port = match.groups()
    return Peer(transport.decode().upper(), host.decode(), int(port))


class Replay:
    """
    Sends one captured folder's PUBLISHes in order, mapping the stub's
    entity-tags to ours.
    """

    def __init__(self, test: KamailioReplayTests, folder: str) -> None:
        self.test = test
        self.folder = folder
        self.answers = answers(folder)
        # Stub entity-tag -> ours, for each PUBLISH replayed so far.
        self.etags: dict[str, str] = {}
        self.granted: list[int] = []

    def send(self, index: int, ifMatch: str | None = None, new: bool = False) -> None:
        """
        Send the PUBLISH of line C{index} of C{answers.txt}, its
        SIP-If-Match naming the publication the stub's entity-tag
        C{ifMatch} (instead of the captured one) or, if C{new}, none.
        """
        name, stubETag, stubExpires = self.answers[index]
        data = (DATA / self.folder / name).read_bytes()
        if new:
            data = _IF_MATCH.sub(b"", data)
        elif ifMatch is not None:
            data = _IF_MATCH.sub(lambda m: m.group(1) + ifMatch.encode() + m.group(3), data)

        def ours(match: re.Match[bytes]) -> bytes:
            stub = match.group(2).decode()
            self.test.assertIn(stub, self.etags, f"{name}: If-Match of no earlier PUBLISH")
            return match.group(1) + self.etags[stub].encode() + match.group(3)

        data = _IF_MATCH.sub(ours, data)
        request = parseMessage(data)
        assert isinstance(request, SIPRequest)
        answer = self.test.compositor.publishReceived(request, source(data))
        self.test.assertEqual((answer.code, answer.reason), (200, "OK"), f"{name}: {answer}")
        etag = answer.header("SIP-ETag")
        expires = answer.header("Expires")
        assert etag is not None and expires is not None
        self.test.assertNotIn(etag, self.etags.values())
        self.test.assertEqual(int(expires), min(stubExpires, self.test.compositor.maxExpires))
        self.etags[stubETag] = etag

    def run(self, expected: Sequence[tuple[TelephonyState, TelephonyState]],
            gaps: Sequence[float] = ()) -> None:  # fmt: skip
        """
        Send the PUBLISHes (the first C{len(expected)}), C{gaps[i]} seconds (default 0.2) after the one
        before, checking C{expected[i]}, the states of alice and bob.
        """
        self.test.assertLessEqual(len(expected), len(self.answers))
        for index, states in enumerate(expected):
            self.test.clock.advance(gaps[index] if index < len(gaps) else 0.2)
            self.send(index)
            self.test.assertEqual(
                (self.test.machine.stateOf(ALICE), self.test.machine.stateOf(BOB)),
                states, f"{self.folder}/{self.answers[index][0]}",
            )  # fmt: skip


class KamailioReplayTests(SynchronousTestCase):
    """
    Each captured call, replayed; both phones are registered, so idle is
    online.
    """

    maxExpires = 3600

    def setUp(self) -> None:
        self.clock = Clock()
        self.machine = TelephonyStateMachine(self.clock, earlyLifetime=181)
        installChecker(self.machine)
        self.chain = ChainRecorder()
        self.machine.addObserver(self.chain)
        self.compositor = EventStateCompositor(
            self.clock, self.machine, aorOf, {ALICE, BOB}.__contains__,
            ["127.0.0.0/8"], maxExpires=self.maxExpires,
            defaultExpires=min(3600, self.maxExpires),
        )  # fmt: skip
        for aor in (ALICE, BOB):
            self.machine.bindingUpdated(aor, f"{aor};phone", 7 * 24 * 3600)

    def pastEarlyLifetime(self) -> float:
        """
        Seconds to wait for an early dialog's lifetime to end, or as long
        as the publications are sure to live if that is shorter.
        """
        return min(self.machine.earlyLifetime + 1, self.compositor.maxExpires - 5)

    def assertIdleAfterAll(self, now: bool = True) -> None:
        """
        Nobody is on the phone or ringing, now (unless not C{now}) and once
        every publication (including a stale one) has expired.
        """
        for aor in (ALICE, BOB) if now else ():
            self.assertEqual(self.machine.stateOf(aor), IDLE, aor)
        self.clock.advance(self.compositor.maxExpires + 1)
        self.assertEqual(len(self.compositor), 0)
        for aor in (ALICE, BOB):
            self.assertEqual(self.machine.stateOf(aor), IDLE, aor)

    def test_answered(self) -> None:
        """
        alice Trying (her outgoing call shows as on the phone), early; bob
        early (ringing); both confirmed; both terminated.
        """
        Replay(self, "answered").run([
            (ON, IDLE), (ON, IDLE), (ON, RINGING), (ON, RINGING), (ON, ON),
            (IDLE, ON), (IDLE, IDLE),
        ])  # fmt: skip
        self.assertIdleAfterAll()

    def test_busy(self) -> None:
        """
        bob's C{terminated} about a dialog he was never published in
        creates a publication that shows nothing.
        """
        Replay(self, "busy").run([(ON, IDLE), (IDLE, IDLE), (IDLE, IDLE)])
        self.assertIdleAfterAll()

    def test_orphan(self) -> None:
        """
        alice's C{Trying} publication is never modified again: her
        C{terminated}, in the second publication, ends the call all the
        same, and the stale first one does not bring it back.
        """
        Replay(self, "orphan").run([
            (ON, IDLE), (ON, IDLE), (ON, ON), (IDLE, ON), (IDLE, IDLE),
        ])  # fmt: skip
        self.assertEqual(len(self.compositor), 3)  # the stale one among them
        # Past the tombstones' lifetime, the stale publication still says
        # nothing about the call.
        self.clock.advance(60)
        self.assertEqual((self.machine.stateOf(ALICE), self.machine.stateOf(BOB)),
                         (IDLE, IDLE))  # fmt: skip
        self.assertIdleAfterAll()

    def test_reordered(self) -> None:
        """
        C{early} after C{confirmed} never moves the call back: alice's in a
        publication of its own, bob's modifying his confirmed one. No
        C{terminated} ever comes: the publications' expiry ends the call.
        """
        Replay(self, "reordered").run([
            (ON, IDLE), (ON, IDLE), (ON, ON), (ON, ON), (ON, ON),
        ])  # fmt: skip
        # Nothing but the publications' lifetime ends it; bob never rang.
        self.assertNotIn(RINGING, [c.state for c in self.chain.changes if c.aor == BOB])
        self.clock.advance(self.compositor.maxExpires - 10)
        self.assertEqual((self.machine.stateOf(ALICE), self.machine.stateOf(BOB)), (ON, ON))
        self.assertIdleAfterAll(now=False)

    def test_reorderedCalleeNewPublication(self) -> None:
        """
        Had bob's C{early} come as a publication of its own, as alice's did
        (the captured one with its SIP-If-Match left out), his answered
        call would not turn back into ringing either.
        """
        replay = Replay(self, "reordered")
        replay.run([(ON, IDLE), (ON, IDLE), (ON, ON), (ON, ON)])
        self.clock.advance(0.2)
        replay.send(4, new=True)
        self.assertEqual(self.machine.stateOf(BOB), ON)
        self.assertEqual(len(self.compositor), 4)
        self.clock.advance(self.pastEarlyLifetime())
        self.assertEqual(self.machine.stateOf(BOB), ON)
        self.assertNotIn(RINGING, [c.state for c in self.chain.changes if c.aor == BOB])
        self.assertIdleAfterAll(now=False)

    def test_orphanCallee(self) -> None:
        """
        The orphan race on bob's side, from the answered call: his
        C{confirmed} comes as a second publication (no SIP-If-Match), and
        his C{terminated} modifies that one. The C{early} publication left
        behind keeps him ringing neither now nor later.
        """
        replay = Replay(self, "answered")
        replay.run([(ON, IDLE), (ON, IDLE), (ON, RINGING), (ON, RINGING)])
        self.clock.advance(0.2)
        replay.send(4, new=True)  # confirmed, beside the early publication
        self.assertEqual(self.machine.stateOf(BOB), ON)
        self.clock.advance(0.2)
        replay.send(5)
        self.clock.advance(0.2)
        replay.send(6)  # terminated, If-Match of the confirmed publication
        self.assertEqual((self.machine.stateOf(ALICE), self.machine.stateOf(BOB)),
                         (IDLE, IDLE))  # fmt: skip
        self.assertEqual(len(self.compositor), 3)  # bob's early one among them
        self.clock.advance(self.pastEarlyLifetime())
        self.assertEqual(self.machine.stateOf(BOB), IDLE)
        self.assertIdleAfterAll()


class KamailioRefreshReplayTests(KamailioReplayTests):
    """
    The same calls with a maximum lifetime of 20 s, as the stub granted.
    """

    maxExpires = 20

    def test_refresh(self) -> None:
        """
        Body-less refreshes keep both on the phone well past the 20 s
        granted, until alice hangs up.
        """
        # Each party is refreshed 12 s after its previous PUBLISH at most.
        gaps = [0.2] * 5 + [6.0] * 8
        Replay(self, "refresh").run([
            (ON, IDLE), (ON, IDLE), (ON, RINGING), (ON, RINGING), (ON, ON),
            (ON, ON), (ON, ON), (ON, ON), (ON, ON), (ON, ON), (ON, ON),
            (IDLE, ON), (IDLE, IDLE),
        ], gaps)  # fmt: skip
        self.assertGreater(self.clock.seconds(), 40)
        # Never dropped in between (a refresh missed would show as idle).
        self.assertEqual(
            [c.state for c in self.chain.changes if c.aor == ALICE and c.state is IDLE
             and c.previous is not S.OFFLINE],
            [IDLE],
        )  # fmt: skip
        self.assertIdleAfterAll()
