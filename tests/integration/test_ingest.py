"""
End to end with sipxmpp off the SIP path (issue 15, item 5): sipp phones
register at a real Kamailio and call each other through it only; Kamailio's
pua_dialoginfo (C{etc/kamailio-pua.cfg}) PUBLISHes both parties' dialog
state to the gateway, a pure publisher (C{[sip] upstream} empty,
C{[ingest] publishers = 127.0.0.1/32}), which logs the users in to a real
Prosody and sets their desktop clients (slixmpp answering XEP-0146) dnd.

What is asserted is what a contact sees over XMPP (L{Watch} from
L{tests.integration.test_e2e}): the caller's and the callee's clients at dnd
"I am currently on the phone" during the call and at their own status after
it; and that PUBLISHes from a source not allowed (403) or with a malformed
body (400) change nothing. Everything listens on 127.0.0.1 (the refused
PUBLISH is sent from a socket bound to 127.0.0.2, also loopback). Waits are
bounded; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import FailTest, SkipTest

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioPuaServer, requireModules
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort
from sipxmpp.testing.process import SharedServer, isCI
from tests.integration.test_e2e import (
    DOMAIN,
    PHONE,
    USERS,
    WAIT,
    E2ETestCase,
    aor,
    describe,
    jid,
)
from tests.integration.test_xmpp_publisher import deferred, sleep

# The users of these tests (passwords as in test_e2e, whose client helpers
# look them up there): alice calls bob; carol gets PUBLISHes by hand.
INGEST_USERS = {user: USERS[user] for user in ("watcher", "alice", "bob", "carol")}
PROVISIONED = ("alice", "bob", "carol")

# Sent from here: 127.0.0.1/32 is the only publisher allowed.
REFUSED_SOURCE = "127.0.0.2"

DIALOG_INFO = """<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full"
             entity="{aor}">
  <dialog id="{dialog}" call-id="{callID}" direction="recipient">
    <state>{state}</state>
  </dialog>
</dialog-info>
"""


class IngestStack:
    """
    Prosody (the users, each in the watcher's roster and the watcher in
    theirs), the gateway as a pure publisher with L{PROVISIONED}'s
    accounts, and Kamailio publishing dialog state to it.
    """

    def __init__(self) -> None:
        from sipxmpp.testing.prosody import ProsodyServer

        self.baseDir = tempfile.mkdtemp(prefix="sipxmpp-ingest-")
        self.prosody = ProsodyServer(
            users=INGEST_USERS, port=freeTCPPort(), baseDir=os.path.join(self.baseDir, "prosody")
        )
        for user in INGEST_USERS:
            if user != "watcher":
                self.prosody.subscribe(user, "watcher")
        self.gateway: GatewayServer | None = None
        self.kamailio: KamailioPuaServer | None = None

    @property
    def running(self) -> bool:
        return (
            self.prosody.running
            and self.gateway is not None
            and self.gateway.running
            and self.kamailio is not None
            and self.kamailio.running
        )

    @property
    def registrar(self) -> str:
        assert self.kamailio is not None
        return f"{self.kamailio.host}:{self.kamailio.port}"

    def start(self) -> None:
        self.prosody.start()
        self.gateway = gateway = GatewayServer(
            upstreamPort=0,
            xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile,
            baseDir=os.path.join(self.baseDir, "gateway"),
            settings={
                ("sip", "upstream"): "",
                ("ingest", "publishers"): f"{LOOPBACK}/32",
                ("xmpp", "command_timeout"): "5",
                ("xmpp", "reconnect_max_delay"): "2",
            },
        )
        # Provision before the gateway starts: it loads who is provisioned
        # at start and only every few seconds after.
        gateway.prepare()

        def add(user: str) -> None:
            gateway.addAccount(aor(user), jid(user), INGEST_USERS[user])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, PROVISIONED))
        gateway.start()
        # pua asks 43201 s while a call is up; the gateway grants its
        # max_expires (3600), far above pua's update_period (60 s).
        self.kamailio = KamailioPuaServer(publishTo=f"sip:{LOOPBACK}:{gateway.sipPort}")
        self.kamailio.start()

    def stop(self) -> None:
        try:
            if self.kamailio is not None:
                self.kamailio.stop()
        finally:
            try:
                if self.gateway is not None:
                    self.gateway.stop()
            finally:
                self.prosody.stop()
                if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
                    shutil.rmtree(self.baseDir, ignore_errors=True)


class Answer:
    """
    A response to a PUBLISH sent by hand.
    """

    def __init__(self, data: bytes) -> None:
        self.raw = data.decode("utf-8", "replace")
        head = self.raw.split("\r\n\r\n", 1)[0].split("\r\n")
        self.code = int(head[0].split()[1])
        self.headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def publish(
    gatewayPort: int,
    user: str,
    body: str | None,
    source: str = LOOPBACK,
    ifMatch: str | None = None,
    expires: int = 60,
    timeout: float = 5.0,
) -> Answer:
    """
    Send one PUBLISH (Event: dialog) for C{user}'s AoR over UDP from
    C{source} to the gateway and return its final response.
    """
    payload = (body or "").encode("utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        port = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:10]
        lines = [
            f"PUBLISH {aor(user)} SIP/2.0",
            f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK{tag};rport",
            "Max-Forwards: 70",
            f"From: <{aor(user)}>;tag={tag}",
            f"To: <{aor(user)}>",
            f"Call-ID: {tag}@{source}",
            "CSeq: 1 PUBLISH",
            "Event: dialog",
            f"Expires: {expires}",
            *([f"SIP-If-Match: {ifMatch}"] if ifMatch else []),
            *(["Content-Type: application/dialog-info+xml"] if payload else []),
            f"Content-Length: {len(payload)}",
        ]
        sock.settimeout(timeout)
        sock.sendto(
            ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload, (LOOPBACK, gatewayPort)
        )
        while True:
            answer = Answer(sock.recv(65536))
            if answer.code >= 200:
                return answer


class IngestTests(E2ETestCase):
    """
    One Prosody, gateway and Kamailio for the class; each test has its own
    users.
    """

    timeout = 120
    shared = SharedServer(IngestStack)

    def setUp(self) -> None:
        requireModules(*KamailioPuaServer.modules)
        super().setUp()

    def registerAtCore(self, user: str) -> int:
        """
        Register C{user}'s phone at Kamailio (the gateway is not on the
        SIP path); return its port, where its UAS must then listen.
        """
        port = freeSIPPort()
        result = self.sipp.register(self.stack.registrar, user, DOMAIN, expires=300, localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    async def send(self, *args: Any, **kwargs: Any) -> Answer:
        answer: Answer = await deferToThread(publish, self.gateway.sipPort, *args, **kwargs)
        return answer

    async def assertNoChange(self, user: str, since: int, seconds: float = 1.5) -> None:
        """
        For C{seconds}, C{user}'s client was never seen dnd and the
        gateway shows no call for C{user}.
        """
        await sleep(seconds)
        busy = [s for s in self.watch.ofUser(jid(user), since) if s.show == "dnd"]
        self.assertEqual(busy, [], f"{user} went dnd:\n{describe(busy)}")
        self.assertNotIn(self.userStatus(user)["telephony"], ("ringing", "on-the-phone"))

    @deferred
    async def test_callThroughKamailio(self) -> None:
        """
        alice calls bob through Kamailio only; from its PUBLISHes the
        gateway logs both in and sets both Psi-style clients dnd "I am
        currently on the phone" while the call is up, and gives them their
        own status back after the BYE. The gateway's own resources never
        go dnd (case b).
        """
        await self.startClient("alice", "psi")
        await self.startClient("bob", "psi")
        alicePort = self.registerAtCore("alice")
        bobPort = self.registerAtCore("bob")
        uas = self.startPhone("pua_uas_ringing", "bob", bobPort)
        mark = self.watch.mark()
        call = self.startCall(
            "uac", self.stack.registrar, "bob", "alice", localPort=alicePort, pauseMs=6000
        )
        await self.expectBusy("alice", mark, PHONE)
        await self.expectBusy("bob", mark, PHONE)
        self.assertStillRunning(call, "both were seen on the phone")
        await self.expectTelephony("alice", "on-the-phone")
        await self.expectTelephony("bob", "on-the-phone")
        await self.finished("alice's call", call)
        await self.finished("bob's phone", uas)
        await self.expectBack("alice", mark)
        await self.expectBack("bob", mark)
        for user in ("alice", "bob"):
            await self.expectStatus(
                user, "telephony", lambda v: v not in ("ringing", "on-the-phone"), "off the phone"
            )
            self.assertGatewayResourceIdle(user, mark)

    @deferred
    async def test_refusedAndMalformedPublish(self) -> None:
        """
        A PUBLISH from a source outside [ingest] publishers gets 403 and a
        malformed dialog-info body 400, and neither changes carol's state.
        A well-formed one from Kamailio's address then sets her client dnd;
        a malformed modification of it gets 400 and she stays on the phone;
        removing the publication gives her her own status back.
        """
        await self.startClient("carol", "psi")
        mark = self.watch.mark()
        confirmed = DIALOG_INFO.format(
            aor=aor("carol"), dialog="d1", callID="c1@test", state="confirmed"
        )
        malformed = confirmed[: confirmed.index("<state>") + len("<state>con")]
        try:
            refused = await self.send("carol", confirmed, source=REFUSED_SOURCE)
        except OSError as e:
            reason = f"cannot send from {REFUSED_SOURCE}: {e}"
            raise (FailTest if isCI() else SkipTest)(reason) from None
        self.assertEqual(refused.code, 403, refused.raw)
        self.assertIsNone(refused.header("SIP-ETag"))
        bad = await self.send("carol", malformed)
        self.assertEqual(bad.code, 400, bad.raw)
        self.assertIsNone(bad.header("SIP-ETag"))
        await self.assertNoChange("carol", mark)

        accepted = await self.send("carol", confirmed)
        self.assertEqual(accepted.code, 200, accepted.raw)
        etag = accepted.header("SIP-ETag")
        assert etag is not None, accepted.raw
        await self.expectBusy("carol", mark, PHONE)
        await self.expectTelephony("carol", "on-the-phone")

        busySince = self.watch.mark()
        badModify = await self.send("carol", malformed, ifMatch=etag)
        self.assertEqual(badModify.code, 400, badModify.raw)
        await sleep(1.5)
        await self.expectTelephony("carol", "on-the-phone")
        changed = [
            s
            for s in self.watch.of(f"{jid('carol')}/psi", busySince)
            if (s.show, s.status) != ("dnd", PHONE)
        ]
        self.assertEqual(
            changed,
            [],
            "carol's client changed after a malformed modification:\n" + describe(changed),
        )

        removed = await self.send("carol", None, ifMatch=etag, expires=0)
        self.assertEqual(removed.code, 200, removed.raw)
        await self.expectBack("carol", mark)
        self.assertGatewayResourceIdle("carol", mark)


def savedTags(gateway: GatewayServer, user: str) -> list[str]:
    """
    The entity-tags of C{user}'s publications in the gateway's SQLite store,
    if it also holds the status of C{user}'s client (saved as the gateway
    set it dnd), else nothing.
    """
    path = os.path.join(gateway.baseDir, "store.sqlite")
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
        statuses = db.execute("SELECT COUNT(*) FROM saved_statuses WHERE aor = ?",
                              (aor(user),)).fetchone()[0]  # fmt: skip
        rows = db.execute("SELECT tag FROM publications WHERE aor = ?", (aor(user),)).fetchall()
    return [str(row[0]) for row in rows] if statuses else []


class IngestRestartTests(E2ETestCase):
    """
    A stack of its own: the test SIGKILLs the gateway and starts it again.
    """

    timeout = 120
    shared = SharedServer(IngestStack)

    def setUp(self) -> None:
        requireModules(*KamailioPuaServer.modules)
        super().setUp()

    async def send(self, *args: Any, **kwargs: Any) -> Answer:
        answer: Answer = await deferToThread(publish, self.gateway.sipPort, *args, **kwargs)
        return answer

    async def waitSaved(self, user: str, etag: str) -> None:
        for _ in range(int(WAIT / 0.1)):
            if etag in await deferToThread(savedTags, self.gateway, user):
                return
            await sleep(0.1)
        self.fail(f"{user}'s publication {etag} and client status never reached the store")

    @deferred
    async def test_callSurvivesRestart(self) -> None:
        """
        carol is on the phone by a PUBLISH when the gateway is killed; the
        restarted gateway shows her on the phone again (her client dnd),
        and the publisher's "terminated", naming the entity-tag it holds,
        is accepted (not 412) and gives her client its own status back.
        """
        await self.startClient("carol", "psi")
        mark = self.watch.mark()
        confirmed = DIALOG_INFO.format(
            aor=aor("carol"), dialog="d1", callID="c-restart@test", state="confirmed"
        )
        accepted = await self.send("carol", confirmed, expires=600)
        self.assertEqual(accepted.code, 200, accepted.raw)
        etag = accepted.header("SIP-ETag")
        assert etag is not None, accepted.raw
        await self.expectBusy("carol", mark, PHONE)
        await self.waitSaved("carol", etag)

        gateway = self.gateway
        address = gateway.address
        await deferToThread(gateway.kill)
        await deferToThread(gateway.start)
        self.assertEqual(gateway.address, address, "the restarted gateway moved")
        await self.expectTelephony("carol", "on-the-phone")

        terminated = DIALOG_INFO.format(
            aor=aor("carol"), dialog="d1", callID="c-restart@test", state="terminated"
        )
        ended = await self.send("carol", terminated, ifMatch=etag, expires=10)
        self.assertEqual(ended.code, 200, ended.raw)
        await self.expectBack("carol", mark)
        await self.expectStatus(
            "carol", "telephony", lambda v: v not in ("ringing", "on-the-phone"), "off the phone"
        )
