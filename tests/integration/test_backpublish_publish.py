"""
Back-publishing in publish mode against real servers (issue 18, items 3
and 4): the gateway (C{[backpublish] mode = publish}) PUBLISHes each
logged-in user's XMPP presence, as its session on a real Prosody sees it,
as PIDF to a real Kamailio presence server (C{etc/kamailio-presence.cfg}:
presence + presence_xml), which is also the registrar behind the gateway.

bob watches alice AT KAMAILIO (a small UDP SIP client in the test
subscribes there, never at the gateway) and gets Kamailio's NOTIFYs, whose
PIDF follows alice's client: online, away, dnd; once the client is offline
the gateway's own resource (open, no activity: her phone is registered).

alice opted out (the real C{sipxmpp-admin account set-backpublish}): the
gateway removes her publication, live; opted in, it publishes again.
A gateway stopping removes its publications.

No loops: a call PUBLISHed to the gateway (C{[ingest] publishers}, a
dialog-info PUBLISH sent by the test as a SIP core would) puts alice's
client at dnd over XMPP; that state came from SIP and is never PUBLISHed
back: bob's NOTIFYs never show it.

Kamailio grants the PUBLISHes only C{GRANTED} seconds: the gateway keeps
the publication alive by refreshing it (SIP-If-Match, no body); restarted,
Kamailio has forgotten it, the refresh gets 412 and the gateway publishes
afresh. A Kamailio taking PUBLISH from elsewhere only (C{PUBLISHERS})
refuses the gateway's with 403, which it retries after a backoff.
Everything listens on 127.0.0.1; waits are bounded; nothing asserts on
timing.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from sipxmpp.sip.wire.pidf import Presence
from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioPresenceServer, requireModules
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import SharedServer
from tests.integration.test_backpublish import (
    Message,
    SIPWatcher,
    isFinal,
    notifyWith,
)
from tests.integration.test_e2e import (
    PHONE,
    USERS,
    WAIT,
    E2ETestCase,
    Stack,
    aor,
    jid,
    normalStatus,
)
from tests.integration.test_ingest import DIALOG_INFO, publish
from tests.integration.test_xmpp_publisher import deferred, sleep

reactor: Any = _reactor

# The longest PUBLISH (and SUBSCRIBE) Kamailio grants: the gateway
# refreshes its publications at 0.8 of it.
GRANTED = 20


class PublishStack(Stack):
    """
    L{Stack} with a Kamailio presence server as the registrar and the
    gateway in C{[backpublish] mode = publish} at it, taking dialog-info
    PUBLISHes from the test.
    """

    def __init__(self, publishers: str | None = None) -> None:
        """
        @param publishers: Kamailio's C{PUBLISHERS} (default: loopback).
        """
        super().__init__(provision=["alice", "bob"])
        self.prosody.subscribe("alice", "bob")
        defines = ["WITH_PUBLISH_LOG"]
        if publishers is not None:
            defines.append(f'PUBLISHERS="{publishers}"')
        # A fixed port: a restarted Kamailio must come back where the
        # gateway publishes.
        self.kamailio = KamailioPresenceServer(maxExpires=GRANTED, port=freeSIPPort(),
                                               defines=defines)

    def start(self) -> None:
        self.prosody.start()
        self.kamailio.start()
        self.gateway = GatewayServer(
            upstreamPort=self.kamailio.port,
            xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile,
            baseDir=os.path.join(self.baseDir, "gateway"),
            settings={("xmpp", "command_timeout"): "5",
                      ("xmpp", "reconnect_max_delay"): "2",
                      ("ingest", "publishers"): f"{LOOPBACK}/32",
                      ("backpublish", "mode"): "publish",
                      ("backpublish", "presence_server"): self.kamailio.uri},  # fmt: skip
        )
        self.gateway.start()
        for user in self.provision:
            self.gateway.addAccount(aor(user), jid(user), USERS[user])


class RefreshingWatcher(SIPWatcher):
    """
    L{SIPWatcher} that refreshes its subscription in its dialog every
    C{GRANTED / 2} seconds (Kamailio grants no longer), so that it
    outlives the grant.
    """

    def __init__(self, user: str) -> None:
        super().__init__(user)
        self.toTag: str | None = None
        self.target: tuple[str, tuple[str, int]] | None = None
        self._loop = LoopingCall(self._refresh)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = Message(data)
        if self.toTag is None and isFinal(message) and message.code < 300:
            found = re.search(r";\s*tag=([^;>\s]+)", message.header("to"))
            self.toTag = found.group(1) if found else None
        super().datagramReceived(data, addr)

    def subscribe(self, target: str, gateway: tuple[str, int], event: str = "presence",
                  expires: int = 300) -> None:  # fmt: skip
        if self.target is None:
            self.target = (target, gateway)
            self._loop.start(GRANTED / 2, now=False)
        super().subscribe(target, gateway, event, expires)

    def _refresh(self) -> None:
        if self.toTag is None or self.target is None:
            return
        # The initial SUBSCRIBE's To with our tag: the same dialog.
        sent = self.transport.write

        def withTag(data: bytes, addr: Any) -> None:
            head, sep, rest = data.partition(b"\r\n\r\n")
            head = re.sub(rb"(?m)^(To: <[^>]*>)\r?$", lambda m: m.group(1) + b";tag="
                          + (self.toTag or "").encode(), head)  # fmt: skip
            sent(head + sep + rest, addr)

        self.transport.write = withTag
        try:
            super().subscribe(self.target[0], self.target[1], expires=GRANTED)
        finally:
            self.transport.write = sent

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()


def published(gateway: GatewayServer, code: str) -> int:
    """
    How many PUBLISHes of the gateway the presence server answered C{code}.
    """
    pattern = re.compile(
        r'^sipxmpp_sip_presence_publish_total\{code="' + code + r'"\} ([0-9.e+]+)$', re.M
    )
    found = pattern.search(gateway.metrics())
    return int(float(found.group(1))) if found else 0


def kamailioLog(stack: Any) -> str:
    with open(stack.kamailio.consoleLog, encoding="utf-8", errors="replace") as f:
        return f.read()


def removals(text: str) -> list[str]:
    """
    The PUBLISHes removing alice's publication that Kamailio took
    (C{WITH_PUBLISH_LOG}), in its log C{text}.
    """
    return re.findall(rf"PUBLISH {re.escape(aor('alice'))} from \S+ Expires: 0 "
                      r"SIP-If-Match: (?!<null>)\S+ Content-Length: 0\n", text)  # fmt: skip


def refreshes(text: str) -> list[str]:
    """
    The PUBLISHes refreshing alice's publication (an entity-tag, no body)
    that Kamailio took, in its log C{text}.
    """
    return re.findall(rf"PUBLISH {re.escape(aor('alice'))} from \S+ Expires: [1-9]\d* "
                      r"SIP-If-Match: (?!<null>)\S+ Content-Length: 0\n", text)  # fmt: skip


def shows(message: Message) -> Presence | None:
    if message.method != "NOTIFY" or not message.body:
        return None
    return message.presence()


class PublishTestCase(E2ETestCase):
    """
    Helpers of the tests below (no tests).
    """

    def setUp(self) -> None:
        requireModules(*KamailioPresenceServer.modules)
        super().setUp()

    def watcher(self, user: str) -> RefreshingWatcher:
        watcher = RefreshingWatcher(user)
        port = reactor.listenUDP(0, watcher, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        self.addCleanup(watcher.stop)
        return watcher

    @property
    def kamailio(self) -> tuple[str, int]:
        return (LOOPBACK, self.stack.kamailio.port)

    async def watching(self, user: str, expires: int = GRANTED) -> RefreshingWatcher:
        """
        C{user} subscribes to alice's presence at Kamailio (active at once).
        """
        watcher = self.watcher(user)
        watcher.subscribe(aor("alice"), self.kamailio, expires=expires)
        answer = await watcher.waitFor("final answer to SUBSCRIBE", isFinal)
        self.assertIn(answer.code, (200, 202), answer)
        return watcher

    async def aliceOnline(self) -> Any:
        client = await self.startClient("alice", "psi")
        self.register("alice")
        await self.loggedIn("alice")
        return client

    async def dialog(self, state: str, callID: str) -> None:
        body = DIALOG_INFO.format(aor=aor("alice"), dialog=callID, callID=callID, state=state)
        answer = await deferToThread(publish, self.gateway.sipPort, "alice", body)
        self.assertEqual(answer.code, 200, answer.raw)

    async def admin(self, *args: str) -> None:
        result = await deferToThread(self.gateway.admin, "account", *args)
        self.assertEqual(result.returncode, 0, result.stderr)

    async def until(self, what: str, probe: Any, timeout: float = GRANTED + WAIT) -> None:
        from time import monotonic

        deadline = monotonic() + timeout
        while not probe():
            if monotonic() > deadline:
                self.fail(f"no {what} in {timeout:g} s:\n{self.gateway.metrics()}")
            await sleep(0.25)


class BackpublishPublishTests(PublishTestCase):
    timeout = 180
    shared = SharedServer(PublishStack)

    @deferred
    async def test_publish(self) -> None:
        """
        bob, watching alice at Kamailio, sees her client's presence as it
        changes; a call that came from SIP is never published back.
        """
        client = await self.aliceOnline()
        bob = await self.watching("bob")
        online = await bob.waitFor("NOTIFY: alice online", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))
        self.assertTrue(online.header("subscription-state").startswith("active"), online)
        self.assertEqual(online.presence().activities, frozenset())

        # A call, as a SIP core PUBLISHes it to the gateway: alice's client
        # goes dnd over XMPP, and back after it.
        mark, seen = len(bob.received), self.watch.mark()
        await self.dialog("confirmed", "call-1")
        await self.expectBusy("alice", seen)
        await self.dialog("terminated", "call-1")
        await self.expectBack("alice", seen)

        client.send(op="presence", show="away", status="lunch", priority=5)
        away = await bob.waitFor("NOTIFY: alice away", notifyWith(
            lambda p: "lunch" in p.notes), mark)
        self.assertTrue(away.presence().open)
        self.assertEqual(away.presence().activities, frozenset({"away"}))
        # Everything bob was told up to then: never the call.
        during = [p for p in map(shows, bob.received[mark:bob.received.index(away)]) if p]
        for presence in during:
            self.assertFalse({"on-the-phone", "busy"} & presence.activities, bob.received[mark:])
            self.assertNotIn(PHONE, presence.notes, bob.received[mark:])

        mark = len(bob.received)
        client.send(op="presence", show="dnd", status="meeting", priority=5)
        dnd = await bob.waitFor("NOTIFY: alice dnd", notifyWith(
            lambda p: "meeting" in p.notes), mark)
        self.assertEqual(dnd.presence().activities, frozenset({"busy"}))

        mark = len(bob.received)
        client.send(op="quit")
        gone = await bob.waitFor("NOTIFY: alice's client offline", notifyWith(
            lambda p: "meeting" not in p.notes), mark)
        # Her phone is registered: the gateway's own resource decides.
        self.assertTrue(gone.presence().open, gone)
        self.assertEqual((gone.presence().activities, gone.presence().notes),
                         (frozenset(), ()))  # fmt: skip

    @deferred
    async def test_refreshAndRestart(self) -> None:
        """
        The gateway refreshes its publication before Kamailio's grant runs
        out; a restarted Kamailio answers the refresh 412 and the gateway
        publishes afresh: a watcher subscribing afterwards sees alice.
        """
        await self.aliceOnline()
        ok, logged = published(self.gateway, "200"), len(kamailioLog(self.stack))
        await self.until("a refresh answered 200", lambda: published(self.gateway, "200") > ok + 1,
                         timeout=2 * GRANTED + WAIT)
        self.assertTrue(refreshes(kamailioLog(self.stack)[logged:]),
                        kamailioLog(self.stack)[logged:])
        # Past the first grant: only the refresh keeps the publication.
        await sleep(GRANTED / 2)
        late = await self.watching("bob")
        await late.waitFor("NOTIFY: alice online", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))

        self.stack.kamailio.stop()
        self.stack.kamailio.start()
        failed = published(self.gateway, "412")
        await self.until("a refresh answered 412",
                         lambda: published(self.gateway, "412") > failed, timeout=GRANTED + 30)
        again = await self.watching("carol")
        await again.waitFor("NOTIFY: alice online after the restart", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))

    @deferred
    async def test_optOut(self) -> None:
        """
        alice opted out by the real C{sipxmpp-admin}: the gateway removes
        her publication and bob's next NOTIFY from Kamailio no longer has
        her document; opted in again, it is published again.
        """
        await self.aliceOnline()
        self.addCleanup(lambda: deferToThread(self.gateway.admin, "account", "set-backpublish",
                                              aor("alice"), "on"))  # fmt: skip
        bob = await self.watching("bob")
        await bob.waitFor("NOTIFY: alice online", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))
        mark, logged = len(bob.received), len(kamailioLog(self.stack))
        await self.admin("set-backpublish", aor("alice"), "off")
        gone = await bob.waitFor("NOTIFY without alice's document", lambda m: (
            m.method == "NOTIFY" and not m.body), mark, timeout=WAIT + GRANTED)  # fmt: skip
        self.assertTrue(gone.header("subscription-state").startswith("active"), gone)
        # Removed (not left to expire): Kamailio took the Expires 0.
        self.assertEqual(len(removals(kamailioLog(self.stack)[logged:])), 1)
        mark = len(bob.received)
        await self.admin("set-backpublish", aor("alice"), "on")
        await bob.waitFor("NOTIFY: alice published again", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes), mark)

    @deferred
    async def test_stopRemoves(self) -> None:
        """
        A gateway stopping removes its publications (Expires 0): bob's
        next NOTIFY from Kamailio has no document of alice's. (Last of the
        class: the gateway is started again for whatever follows.)
        """
        await self.aliceOnline()
        bob = await self.watching("bob")
        await bob.waitFor("NOTIFY: alice online", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))
        mark, logged = len(bob.received), len(kamailioLog(self.stack))
        await deferToThread(self.gateway.stop)
        try:
            gone = await bob.waitFor("NOTIFY without alice's document", lambda m: (
                m.method == "NOTIFY" and not m.body), mark)  # fmt: skip
            self.assertTrue(gone.header("subscription-state").startswith("active"), gone)
            # Removed (not left to expire): Kamailio took the Expires 0.
            self.assertEqual(len(removals(kamailioLog(self.stack)[logged:])), 1)
        finally:
            await deferToThread(self.gateway.start)



class BackpublishRefusedTests(PublishTestCase):
    """
    A Kamailio that takes PUBLISH only from 192.0.2.0/24 (documentation
    addresses, never the gateway's): its 403 is retried after a backoff,
    and nothing of alice's is published.
    """

    timeout = 120
    shared = SharedServer(lambda: PublishStack(publishers=r"^192\.0\.2\."))

    @deferred
    async def test_refusedAndRetried(self) -> None:
        """
        Kamailio refuses the gateway's PUBLISH (403, logged); the gateway
        tries again after its backoff (a second 403), never gets a 200,
        and a watcher at Kamailio gets no document of alice's.
        """
        await self.aliceOnline()
        await self.until("a PUBLISH refused and retried", lambda: published(self.gateway, "403")
                         >= 2)  # fmt: skip
        refused = re.findall(r"PUBLISH from 127\.0\.0\.1:\d+ refused", kamailioLog(self.stack))
        self.assertGreaterEqual(len(refused), 2)
        self.assertEqual(published(self.gateway, "200"), 0)
        bob = await self.watching("bob")
        first = await bob.waitFor("NOTIFY", lambda m: m.method == "NOTIFY")
        self.assertEqual(first.body, b"", first)
