"""
A real Kamailio 5.6 with C{etc/kamailio-pua.cfg} proxies sipp calls and
PUBLISHes both parties' dialog state (pua_dialoginfo) to a stub presence
server in this test, which answers every PUBLISH 200 with a fresh SIP-ETag
and the requested Expires and keeps what it received (issue 15, item 5).

These tests pin down what sipxmpp's PUBLISH ingest gets from Kamailio; the
sequences they capture are kept as raw files in C{tests/data/kamailio-pua/}
for the parser's unit tests (see the README there).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.kamailio import KamailioPuaServer, requireModules
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import requireBinaries, startForTest
from sipxmpp.testing.sipp import SippResult, SippRunner

DOMAIN = "example.test"
DIALOG_INFO = "{urn:ietf:params:xml:ns:dialog-info}"


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


class Publish:
    """
    One PUBLISH as the stub received it.

    @ivar raw: the datagram, byte for byte.
    @ivar requestURI: the Request-URI.
    @ivar headers: (name, value) in order.
    @ivar body: the body, bytes.
    @ivar etag: the SIP-ETag the stub answered with.
    @ivar granted: the Expires the stub answered with.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8").split("\r\n")
        self.method, self.requestURI, _ = lines[0].split(" ", 2)
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip(), value.strip()))
        self.etag = ""
        self.granted = 0

    def header(self, name: str) -> str | None:
        """
        The first value of header C{name} (any case), or L{None}.
        """
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def allHeaders(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def expires(self) -> int:
        return int(self.header("Expires") or "-1")

    @property
    def document(self) -> ET.Element | None:
        """
        The dialog-info document (a refresh has none).  Kamailio's own
        output, so the standard parser is good enough here.
        """
        return ET.fromstring(self.body) if self.body else None

    @property
    def entity(self) -> str | None:
        document = self.document
        return None if document is None else document.get("entity")

    @property
    def dialog(self) -> ET.Element:
        document = self.document
        assert document is not None, "a PUBLISH without a body has no dialog"
        dialogs = document.findall(DIALOG_INFO + "dialog")
        assert len(dialogs) == 1, f"expected one dialog, got {len(dialogs)}"
        return dialogs[0]

    @property
    def state(self) -> str:
        state = self.dialog.find(DIALOG_INFO + "state")
        assert state is not None and state.text is not None
        return state.text

    def target(self, side: str) -> str | None:
        """
        The C{local} or C{remote} target URI, or L{None}.
        """
        target = self.dialog.find(f"{DIALOG_INFO}{side}/{DIALOG_INFO}target")
        return None if target is None else target.get("uri")


class PresenceStub:
    """
    A presence server on a UDP port of 127.0.0.1 that accepts every
    PUBLISH (200, a new SIP-ETag, Expires as requested but at most
    C{maxExpires}) and keeps them in arrival order; a retransmission gets
    the same answer again and is kept once.  Runs in a thread until
    L{stop}.
    """

    def __init__(self, host: str = LOOPBACK, maxExpires: int | None = None) -> None:
        self.maxExpires = maxExpires
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.publishes: list[Publish] = []
        self.others: list[bytes] = []
        self._answers: dict[str, bytes] = {}
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="presence-stub", daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stopped:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._handle(data)
            if answer is not None:
                self.sock.sendto(answer, source)

    def _handle(self, data: bytes) -> bytes | None:
        if not data.startswith(b"PUBLISH "):
            with self._changed:
                self.others.append(data)
                self._changed.notify_all()
            return None
        publish = Publish(data)
        branch = publish.header("Via") or ""
        if branch in self._answers:
            return self._answers[branch]
        publish.etag = uuid.uuid4().hex[:16]
        publish.granted = max(publish.expires, 0)
        if self.maxExpires is not None:
            publish.granted = min(publish.granted, self.maxExpires)
        lines = ["SIP/2.0 200 OK"]
        lines += [f"Via: {via}" for via in publish.allHeaders("Via")]
        lines += [
            f"From: {publish.header('From')}",
            f"To: {publish.header('To')};tag={uuid.uuid4().hex[:8]}",
            f"Call-ID: {publish.header('Call-ID')}",
            f"CSeq: {publish.header('CSeq')}",
            f"SIP-ETag: {publish.etag}",
            f"Expires: {publish.granted}",
            "Content-Length: 0",
        ]
        answer = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        with self._changed:
            self._answers[branch] = answer
            self.publishes.append(publish)
            self._changed.notify_all()
        return answer

    def waitFor(self, done: Callable[[list[Publish]], bool], timeout: float = 10.0) -> bool:
        """
        Wait until C{done(publishes so far)} holds; return whether it did
        within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(list(self.publishes)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def quietFor(self, seconds: float) -> None:
        """
        Wait until nothing arrived for C{seconds}.
        """
        count = -1
        while count != len(self.publishes):
            count = len(self.publishes)
            time.sleep(seconds)

    def of(self, user: str) -> list[Publish]:
        """
        The PUBLISHes for C{user}'s AoR, in arrival order.
        """
        return [p for p in self.publishes if p.requestURI == aor(user)]

    def save(self, folder: str) -> None:
        """
        Write every PUBLISH, as received, to C{folder}/publish-NN.sip, and
        what the stub answered to C{folder}/answers.txt (one line each:
        file, SIP-ETag, Expires).
        """
        os.makedirs(folder, exist_ok=True)
        answers = []
        for number, publish in enumerate(self.publishes, 1):
            name = f"publish-{number:02d}.sip"
            with open(os.path.join(folder, name), "wb") as f:
                f.write(publish.raw)
            answers.append(f"{name} {publish.etag} {publish.granted}\n")
        with open(os.path.join(folder, "answers.txt"), "w", encoding="ascii") as f:
            f.writelines(answers)


def terminatedFor(*users: str) -> Callable[[list[Publish]], bool]:
    def done(publishes: list[Publish]) -> bool:
        ended = {p.requestURI for p in publishes if p.body and p.state.lower() == "terminated"}
        return all(aor(user) in ended for user in users)

    return done


def callID(result: SippResult) -> str:
    """
    The Call-ID of the first message in a sipp C{-trace_msg} log.
    """
    match = re.search(r"^\s*Call-ID: *(\S+)", result.messages, re.M | re.I)
    assert match is not None, result.describe()
    return match.group(1)


class KamailioPuaTests(SynchronousTestCase):
    """
    One Kamailio and one stub presence server per test.
    """

    def setUp(self) -> None:
        requireBinaries("kamailio", "sipp")
        requireModules(*KamailioPuaServer.modules)
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def start(self, maxExpires: int | None = None, defines: tuple[str, ...] = ()) -> None:
        """
        Start the stub presence server and Kamailio publishing to it.
        """
        self.presence = PresenceStub(maxExpires=maxExpires)
        self.addCleanup(self.presence.stop)
        # Keep what arrived (SIPXMPP_KEEP_TEST_DIRS=1), for the data files
        # and for failures.
        self.addCleanup(self.presence.save, os.path.join(self.sipp.workDir, "publishes"))
        self.kamailio = startForTest(
            self, KamailioPuaServer(publishTo=self.presence.uri, defines=defines)
        )
        self.target = f"{self.kamailio.host}:{self.kamailio.port}"

    def register(self, user: str) -> int:
        port = freeSIPPort()
        result = self.sipp.register(self.target, user, expires=300, localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def describe(self) -> str:
        return "\n\n".join(p.raw.decode("utf-8", "replace") for p in self.presence.publishes)

    def placeCall(self, uasScenario: str, talkMs: int = 200) -> tuple[SippResult, int, int]:
        """
        Register alice and bob, let bob answer with C{uasScenario}, and let
        alice call him from her registered port, talk C{talkMs} and hang
        up; wait until both were published terminated.

        @return: alice's sipp result, her port, bob's port.
        """
        alicePort = self.register("alice")
        bobPort = self.register("bob")
        uas = self.sipp.start(uasScenario, service="bob", localPort=bobPort)
        call = self.sipp.run(
            "uac",
            self.target,
            service="bob",
            keys={"domain": DOMAIN, "caller": "alice"},
            localPort=alicePort,
            traceMessages=True,
            timeout=talkMs / 1000 + 10,
            extraArgs=["-d", str(talkMs)],
        )
        self.assertTrue(call.ok, call.describe())
        answered = uas.wait()
        self.assertTrue(answered.ok, answered.describe())
        self.assertTrue(
            self.presence.waitFor(terminatedFor("alice", "bob")),
            "no terminated PUBLISH for both:\n" + self.describe(),
        )
        self.presence.quietFor(1.0)
        self.assertEqual(self.presence.others, [])
        return call, alicePort, bobPort

    def assertCallPublished(
        self, call: SippResult, expected: dict[str, list[str]]
    ) -> dict[str, list[Publish]]:
        """
        Check what every answered call gets published, however fast it
        goes: each party's C{expected} states (any case) in order, each an
        Event: dialog PUBLISH about one dialog (the call) with their own
        AoR as entity.  Every SIP-If-Match names the SIP-ETag of an earlier
        PUBLISH of the same party, and the last one (terminated) modifies a
        publication.

        @return: user -> their PUBLISHes.
        """
        self.assertEqual({p.requestURI for p in self.presence.publishes}, set(map(aor, expected)))
        dialogIDs = set()
        published = {}
        for user, states in expected.items():
            publishes = published[user] = self.presence.of(user)
            self.assertEqual([p.state.lower() for p in publishes], states, self.describe())
            for index, publish in enumerate(publishes):
                self.assertEqual(publish.header("Event"), "dialog")
                self.assertEqual(publish.header("Content-Type"), "application/dialog-info+xml")
                self.assertIn(f"<{aor(user)}>", publish.header("To") or "")
                self.assertEqual(publish.entity, aor(user))
                document = publish.document
                assert document is not None
                self.assertEqual(document.get("state"), "full")
                # pua leaves the version alone (dlginfo_increase_version 0).
                self.assertEqual(document.get("version"), "0")
                dialog = publish.dialog
                self.assertEqual(
                    dialog.get("direction"), "initiator" if user == "alice" else "recipient"
                )
                self.assertEqual(dialog.get("call-id"), callID(call))
                dialogIDs.add(dialog.get("id"))
                ifMatch = publish.header("SIP-If-Match")
                if ifMatch is not None:
                    self.assertIn(ifMatch, [p.etag for p in publishes[:index]])
            self.assertIsNone(publishes[0].header("SIP-If-Match"))
            self.assertIsNotNone(publishes[-1].header("SIP-If-Match"), self.describe())
            # While the call is up the publication lasts as long as the
            # dialog may (dialog default_timeout + 1); once terminated only
            # a few seconds.
            self.assertEqual({p.expires for p in publishes[:-1]}, {43201})
            self.assertEqual(publishes[-1].expires, 11)
        # One dialog id for the call, in both parties' documents.
        self.assertEqual(len(dialogIDs), 1, dialogIDs)
        return published

    def test_answeredCall(self) -> None:
        """
        alice calls bob, whose phone rings for a while before he answers,
        and hangs up: each party's first PUBLISH creates a publication and
        every later one modifies it with the SIP-ETag of the one before.
        Only the early PUBLISH has the dialog's tags and both phones'
        Contacts as targets; before and after, a party Kamailio has no
        Contact for is targeted by its AoR.
        """
        self.start()
        call, alicePort, bobPort = self.placeCall("pua_uas_ringing")
        published = self.assertCallPublished(
            call,
            {
                "alice": ["trying", "early", "confirmed", "terminated"],
                "bob": ["early", "confirmed", "terminated"],
            },
        )
        for publishes in published.values():
            for previous, publish in zip(publishes, publishes[1:], strict=False):
                self.assertEqual(publish.header("SIP-If-Match"), previous.etag)
        aliceContact = f"sip:alice@{LOOPBACK}:{alicePort};transport=UDP"
        bobContact = f"sip:bob@{LOOPBACK}:{bobPort};transport=UDP"
        targets = {
            user: [(p.state, p.target("local"), p.target("remote")) for p in publishes]
            for user, publishes in published.items()
        }
        self.assertEqual(
            targets,
            {
                "alice": [
                    ("Trying", aor("alice"), aor("bob")),
                    ("early", aliceContact, bobContact),
                    ("confirmed", aliceContact, aor("bob")),
                    ("terminated", aliceContact, aor("bob")),
                ],
                "bob": [
                    ("early", bobContact, aliceContact),
                    ("confirmed", aor("bob"), aliceContact),
                    ("terminated", aor("bob"), aliceContact),
                ],
            },
        )
        for publishes in published.values():
            tagged = [p.state for p in publishes if p.dialog.get("local-tag") is not None]
            self.assertEqual(tagged, ["early"])
            self.assertIsNotNone(publishes[-3].dialog.get("remote-tag"))

    def test_fastAnswer(self) -> None:
        """
        bob's phone answers at once, without ringing (200 only): bob is
        first published confirmed, never early.  Kamailio may publish a new
        state before the previous PUBLISH was answered; then pua, which
        has no SIP-ETag yet, creates a second publication (no SIP-If-Match)
        instead of modifying the first, and the first one is never ended:
        it keeps its state for its Expires (43201 s).  Every such orphan
        names the dialog id that the terminated PUBLISH names too.

        (With 180 and 200 back to back, Kamailio's workers may even relay
        and publish them in reverse order: tests/data/kamailio-pua/.)
        """
        self.start()
        call, _, _ = self.placeCall("e2e_uas_answer")
        published = self.assertCallPublished(
            call,
            {"alice": ["trying", "confirmed", "terminated"], "bob": ["confirmed", "terminated"]},
        )
        for publishes in published.values():
            modified = {p.header("SIP-If-Match") for p in publishes}
            orphans = [p for p in publishes[:-1] if p.etag not in modified]
            for orphan in orphans:
                self.assertEqual(orphan.dialog.get("id"), publishes[-1].dialog.get("id"))
                self.assertEqual(orphan.expires, 43201)

    def test_busyCallee(self) -> None:
        """
        bob rejects alice's call with 486: alice's Trying ends in
        terminated, and bob, whose phone never rang, still gets a
        terminated PUBLISH: a new publication (no SIP-If-Match) about a
        dialog he was never published in.
        """
        self.start()
        bobPort = self.register("bob")
        uas = self.sipp.answer("bob", localPort=bobPort, busy=True)
        call = self.sipp.call(self.target, "bob", caller="alice", expectBusy=True)
        self.assertTrue(call.ok, call.describe())
        self.assertTrue(uas.wait().ok)
        self.assertTrue(
            self.presence.waitFor(terminatedFor("alice")),
            "no terminated PUBLISH for alice:\n" + self.describe(),
        )
        self.presence.quietFor(1.0)
        self.assertEqual(
            [p.state.lower() for p in self.presence.of("alice")], ["trying", "terminated"]
        )
        bob = self.presence.of("bob")
        self.assertEqual([p.state.lower() for p in bob], ["terminated"], self.describe())
        self.assertIsNone(bob[0].header("SIP-If-Match"))
        self.assertEqual(bob[0].entity, aor("bob"))

    def test_unknownCalleeIsNotPublished(self) -> None:
        """
        A call to a user without binding is refused before the dialog is
        tracked: nobody's state changes.
        """
        self.start()
        call = self.sipp.call(self.target, "nobody", caller="alice")
        self.assertEqual(call.failed, 1)
        self.assertIn("404 Not Found", call.errors)
        self.presence.quietFor(1.0)
        self.assertEqual(self.presence.publishes, [])

    def test_shortenedExpiresIsRefreshed(self) -> None:
        """
        A presence server that grants less than the 43201 s asked gets
        refreshes before the publication expires: a PUBLISH without body
        with SIP-If-Match naming the current SIP-ETag and, as Expires, what
        is left of the dialog's lifetime.  (pua's timer runs every
        update_period - 5 s and refreshes what expires within update_period:
        6 s here, so a grant of 10 s is refreshed every few seconds.)
        """
        self.start(maxExpires=10, defines=("PUA_UPDATE_PERIOD=6",))
        self.placeCall("pua_uas_ringing", talkMs=8000)
        for user in ("alice", "bob"):
            publishes = self.presence.of(user)
            states = [p.state.lower() if p.body else "refresh" for p in publishes]
            self.assertEqual(states[-1], "terminated", self.describe())
            refreshes = [p for p in publishes if not p.body]
            self.assertTrue(refreshes, self.describe())
            # Refreshes come only once the call is confirmed: the earlier
            # states do not last long enough.
            self.assertEqual(states[: states.index("refresh")][-1], "confirmed")
            for previous, publish in zip(publishes, publishes[1:], strict=False):
                self.assertEqual(publish.header("SIP-If-Match"), previous.etag, self.describe())
            for refresh in refreshes:
                self.assertEqual(refresh.header("Event"), "dialog")
                self.assertIsNone(refresh.header("Content-Type"))
                self.assertLess(refresh.expires, 43201)
                self.assertGreater(refresh.expires, 43201 - 60)
