"""
Back-publishing in serve mode against real servers (issue 18): the gateway
(C{[backpublish] mode = serve}, Kamailio upstream) is a presence agent for
its provisioned users, showing SIP watchers the user's XMPP presence as
its session on a real Prosody sees it.

alice registers her phone through the gateway (so it logs her in to XMPP)
and has a desktop client online; bob (provisioned, in alice's roster with
subscription both) subscribes to C{Event: presence} for alice from a small
UDP SIP client in the test, and gets NOTIFYs whose PIDF follows alice's
client: away, dnd, and once it is offline the gateway's own resource
(open, no activity: her phone is still registered). carol, provisioned but
not in alice's roster, gets 403; dave, on the operator's allow-list
(C{[backpublish] allowed_watchers}), is active without being in it.

A call PUBLISHed to the gateway (C{[ingest] publishers}, as a SIP core
would) shows to bob as on-the-phone: the dnd the gateway itself sets may be
shown to watchers (it is never PUBLISHed back: see
L{tests.integration.test_backpublish_publish}). alice opted out by the real
C{sipxmpp-admin account set-backpublish} ends bob's and dave's
subscriptions (terminated, reason=rejected) and refuses new ones (403),
live; opted in again, bob subscribes again. Bad SUBSCRIBEs get 423, 400,
406, 481, 489 from the gateway (404 from Kamailio for a user not
provisioned). A refresh in the dialog gets 200 and a NOTIFY with the new
lifetime, Expires 0 a final NOTIFY (reason=timeout), a refresh of the
ended dialog 481; a gateway stopping ends the subscriptions (reason=
deactivated). Everything listens on
127.0.0.1; waits are bounded.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import deferToThread

from sipxmpp.sip.wire.pidf import Presence, parsePresence
from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.ports import LOOPBACK
from sipxmpp.testing.process import SharedServer
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
from tests.integration.test_xmpp_publisher import deferred, sleep

reactor: Any = _reactor


class BackpublishStack(Stack):
    """
    L{Stack} with alice and bob mutual contacts and the gateway in
    C{[backpublish] mode = serve}.
    """

    def __init__(self) -> None:
        super().__init__(provision=["alice", "bob", "carol"])
        self.prosody.subscribe("alice", "bob")
        self.prosody.subscribe("alice", "erin")  # provisioned by a test

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
                      ("backpublish", "mode"): "serve",
                      ("backpublish", "allowed_watchers"): aor("dave")},  # fmt: skip
        )
        # Provisioned before the start, and waited for: until the gateway
        # has loaded alice's AoR it forwards a SUBSCRIBE for her to
        # Kamailio, which tries her phone (408), not the presence agent.
        self.gateway.prepare()
        for user in self.provision:
            self.gateway.addAccount(aor(user), jid(user), USERS[user])
        self.gateway.start()
        gateway = self.gateway
        waitFor("the gateway counting its provisioned accounts",
                lambda: _provisioned(gateway) >= len(self.provision), timeout=WAIT)


def _provisioned(gateway: GatewayServer) -> int:
    sip = gateway.status()["sip"]
    assert isinstance(sip, dict)
    return int(sip.get("provisioned", 0))


class Message:
    """
    A SIP message received by L{SIPWatcher}.
    """

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.startLine = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        self.isResponse = self.startLine.startswith("SIP/2.0")
        self.code = int(self.startLine.split()[1]) if self.isResponse else 0
        self.method = "" if self.isResponse else self.startLine.split()[0]

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name.lower()), "")

    def presence(self) -> Presence:
        return parsePresence(self.body)

    def __repr__(self) -> str:
        return f"<{self.startLine} {self.header('subscription-state')!r} {self.body[:400]!r}>"


class SIPWatcher(DatagramProtocol):
    """
    A presence watcher over UDP: sends SUBSCRIBEs, answers NOTIFYs 200,
    keeps everything it received.
    """

    def __init__(self, user: str) -> None:
        self.user = user
        self.received: list[Message] = []
        self.callID = f"{uuid.uuid4().hex}@{LOOPBACK}"
        self.tag = uuid.uuid4().hex[:10]
        self.cseq = 0
        self._waiters: list[tuple[Callable[[Message], bool], Deferred[Message]]] = []

    @property
    def port(self) -> int:
        port: int = self.transport.getHost().port
        return port

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        message = Message(data)
        self.received.append(message)
        if message.method == "NOTIFY":
            answer = ["SIP/2.0 200 OK"]
            answer += [f"{n}: {v}" for n, v in message.headers
                       if n in ("via", "from", "to", "call-id", "cseq")]  # fmt: skip
            answer.append("Content-Length: 0")
            self.transport.write(("\r\n".join(answer) + "\r\n\r\n").encode(), addr)
        for match, d in list(self._waiters):
            if match(message):
                self._waiters.remove((match, d))
                d.callback(message)

    def subscribe(self, target: str, gateway: tuple[str, int], event: str = "presence",
                  expires: int = 300, replace: dict[str, str | None] | None = None,
                  toTag: str | None = None) -> None:  # fmt: skip
        """
        Send a SUBSCRIBE; C{replace} changes headers by name (L{None}
        leaves one out), C{toTag} makes it one in a dialog.
        """
        self.cseq += 1
        branch = uuid.uuid4().hex[:16]
        headers = {
            "Via": f"SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{branch};rport",
            "Max-Forwards": "70",
            "From": f"<{aor(self.user)}>;tag={self.tag}",
            "To": f"<{target}>" + (f";tag={toTag}" if toTag else ""),
            "Call-ID": self.callID,
            "CSeq": f"{self.cseq} SUBSCRIBE",
            "Contact": f"<sip:{self.user}@{LOOPBACK}:{self.port}>",
            "Event": event,
            "Accept": "application/pidf+xml",
            "Expires": str(expires),
        }
        headers.update(replace or {})
        lines = [f"SUBSCRIBE {target} SIP/2.0"]
        lines += [f"{name}: {value}" for name, value in headers.items() if value is not None]
        lines.append("Content-Length: 0")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode(), gateway)

    def waitFor(self, what: str, match: Callable[[Message], bool], since: int = 0,
                timeout: float = WAIT) -> Deferred[Message]:  # fmt: skip
        for message in self.received[since:]:
            if match(message):
                return Deferred.fromCoroutine(_now(message))
        d: Deferred[Message] = Deferred()
        self._waiters.append((match, d))

        def expire() -> None:
            if not d.called:
                self._waiters.remove((match, d))
                d.errback(AssertionError(f"{self.user}: no {what} in {timeout} s; got "
                                         f"{self.received[since:]}"))  # fmt: skip

        call = reactor.callLater(timeout, expire)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d


async def _now(message: Message) -> Message:
    return message


def isFinal(message: Message) -> bool:
    return message.isResponse and message.code >= 200 and "SUBSCRIBE" in message.header("cseq")


def notifyWith(check: Callable[[Presence], bool]) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        if message.method != "NOTIFY" or not message.body:
            return False
        return check(message.presence())

    return match


class BackpublishServeTests(E2ETestCase):
    timeout = 120
    shared = SharedServer(BackpublishStack)

    def watcher(self, user: str) -> SIPWatcher:
        watcher = SIPWatcher(user)
        port = reactor.listenUDP(0, watcher, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        return watcher

    async def subscribed(self, watcher: SIPWatcher, target: str, event: str = "presence") -> Message:
        """
        Subscribe until the gateway knows the users (provisioned AoRs are
        loaded every few seconds); return the final answer.
        """
        for _ in range(20):
            since = len(watcher.received)
            watcher.subscribe(target, (LOOPBACK, self.gateway.sipPort), event)
            final = await watcher.waitFor("final answer to SUBSCRIBE", isFinal, since)
            if final.code != 404:
                return final
            await sleep(0.5)
        return final

    @deferred
    async def test_serve(self) -> None:
        """
        bob sees alice's client's presence in NOTIFYs as it changes; carol
        (not in alice's roster) gets 403.
        """
        client = await self.startClient("alice", "psi")
        self.register("alice")
        await self.expectStatus("alice", "xmpp", lambda v: v == "connected", "logged in")
        bob = self.watcher("bob")
        answer = await self.subscribed(bob, aor("alice"))
        self.assertIn(answer.code, (200, 202), answer)
        first = await bob.waitFor("NOTIFY: alice online", notifyWith(
            lambda p: p.open and normalStatus("alice") in p.notes))
        self.assertTrue(first.header("subscription-state").startswith("active"), first)
        self.assertEqual(first.presence().activities, frozenset())

        mark = len(bob.received)
        client.send(op="presence", show="away", status="lunch", priority=5)
        away = await bob.waitFor("NOTIFY: alice away", notifyWith(
            lambda p: "lunch" in p.notes), mark)
        self.assertTrue(away.presence().open)
        self.assertEqual(away.presence().activities, frozenset({"away"}))

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

        await self.refused(self.watcher("carol"))

    async def refused(self, watcher: SIPWatcher) -> None:
        """
        C{watcher} is refused alice's presence: 403 at once, or 202 and
        pending while the gateway looks the watcher up, then a NOTIFY
        ending the subscription (terminated, reason=rejected).
        """
        since = len(watcher.received)
        answer = await self.subscribed(watcher, aor("alice"))
        if answer.code == 403:
            return
        self.assertEqual(answer.code, 202, answer)
        ended = await watcher.waitFor(f"{watcher.user}: final NOTIFY", lambda m: (
            m.method == "NOTIFY" and m.header("subscription-state").startswith("terminated")),
            since)  # fmt: skip
        self.assertEqual(ended.header("subscription-state"), "terminated;reason=rejected")

    async def aliceLoggedIn(self) -> None:
        """
        alice's phone registered through the gateway, her session up.
        """
        self.register("alice")
        await self.expectStatus("alice", "xmpp", lambda v: v == "connected", "logged in")

    async def activeWatcher(self, user: str) -> SIPWatcher:
        """
        C{user} subscribed to alice and told her presence (202 and pending
        first if the gateway has not read C{user}'s account yet).
        """
        watcher = self.watcher(user)
        answer = await self.subscribed(watcher, aor("alice"))
        self.assertIn(answer.code, (200, 202), answer)
        await watcher.waitFor(f"NOTIFY to {user}: alice", lambda m: (
            notifyWith(lambda p: True)(m) and m.header("subscription-state").startswith("active")))
        return watcher

    async def dialog(self, state: str, callID: str) -> None:
        from tests.integration.test_ingest import DIALOG_INFO, publish

        body = DIALOG_INFO.format(aor=aor("alice"), dialog=callID, callID=callID, state=state)
        answer = await deferToThread(publish, self.gateway.sipPort, "alice", body)
        self.assertEqual(answer.code, 200, answer.raw)

    async def setBackpublish(self, user: str, state: str) -> None:
        result = await deferToThread(self.gateway.admin, "account", "set-backpublish",
                                     aor(user), state)  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)

    @deferred
    async def test_callShown(self) -> None:
        """
        A call PUBLISHed to the gateway shows to bob as on-the-phone with
        the gateway's status text, and goes after it.
        """
        await self.aliceLoggedIn()
        bob = await self.activeWatcher("bob")
        mark = len(bob.received)
        await self.dialog("confirmed", "call-serve-1")
        busy = await bob.waitFor("NOTIFY: alice on the phone", notifyWith(
            lambda p: "on-the-phone" in p.activities), mark)
        self.assertTrue(busy.presence().open, busy)
        self.assertIn(PHONE, busy.presence().notes)
        mark = len(bob.received)
        await self.dialog("terminated", "call-serve-1")
        after = await bob.waitFor("NOTIFY: alice off the phone", notifyWith(
            lambda p: "on-the-phone" not in p.activities), mark)
        self.assertEqual((after.presence().activities, after.presence().notes),
                         (frozenset(), ()))  # fmt: skip

    @deferred
    async def test_allowListAndOptOut(self) -> None:
        """
        dave (allow-listed, not in alice's roster) is active like bob;
        alice opted out ends both subscriptions and refuses new ones, at
        once; opted in again, bob is active again.
        """
        await self.aliceLoggedIn()
        self.addCleanup(lambda: deferToThread(self.gateway.admin, "account", "set-backpublish",
                                              aor("alice"), "on"))  # fmt: skip
        bob = await self.activeWatcher("bob")
        dave = await self.activeWatcher("dave")
        marks = len(bob.received), len(dave.received)
        await self.setBackpublish("alice", "off")
        for watcher, mark in zip((bob, dave), marks, strict=True):
            ended = await watcher.waitFor(f"{watcher.user}: final NOTIFY", lambda m: (
                m.method == "NOTIFY" and m.header("subscription-state").startswith("terminated")),
                mark)  # fmt: skip
            self.assertEqual(ended.header("subscription-state"), "terminated;reason=rejected")
        for user in ("bob", "dave"):
            refused = await self.subscribed(self.watcher(user), aor("alice"))
            self.assertEqual(refused.code, 403, refused)
        await self.setBackpublish("alice", "on")
        again = self.watcher("bob")
        for _ in range(40):
            since = len(again.received)
            again.subscribe(aor("alice"), (LOOPBACK, self.gateway.sipPort))
            answer = await again.waitFor("final answer to SUBSCRIBE", isFinal, since)
            if answer.code != 403:
                break
            # The gateway reads the admin change within seconds.
            await sleep(0.5)
            again = self.watcher("bob")
        self.assertEqual(answer.code, 200, answer)
        await again.waitFor("NOTIFY: alice", notifyWith(lambda p: p.open))

    @deferred
    async def test_watcherJustProvisioned(self) -> None:
        """
        erin, in alice's roster and provisioned a moment before she
        subscribes (before the gateway reads the provisioned AoRs again),
        is not refused: looked up, pending at most, then active.
        """
        await self.aliceLoggedIn()
        await deferToThread(self.gateway.addAccount, aor("erin"), jid("erin"), USERS["erin"])
        self.addCleanup(deferToThread, self.gateway.admin, "account", "remove", aor("erin"))
        await self.activeWatcher("erin")

    @deferred
    async def test_badSubscribe(self) -> None:
        """
        What the gateway refuses: an Expires too short (423 with
        Min-Expires), no Contact or no From tag (400), an Accept without
        PIDF (406), another event package in alice's dialog (489 with
        Allow-Events), a refresh of a dialog it does not have (481); a
        user not provisioned is not the gateway's and gets 404 from
        Kamailio behind it.
        """
        await self.aliceLoggedIn()
        gateway = (LOOPBACK, self.gateway.sipPort)

        async def answer(watcher: SIPWatcher, **kwargs: Any) -> Message:
            since = len(watcher.received)
            watcher.subscribe(aor("alice"), gateway, **kwargs)
            return await watcher.waitFor("final answer to SUBSCRIBE", isFinal, since)

        bob = self.watcher("bob")
        short = await answer(bob, expires=5)
        self.assertEqual((short.code, short.header("min-expires")), (423, "60"), short)
        self.assertEqual((await answer(bob, replace={"Contact": None})).code, 400)
        self.assertEqual((await answer(bob, replace={"From": f"<{aor('bob')}>"})).code, 400)
        self.assertEqual((await answer(bob, replace={"Accept": "text/plain"})).code, 406)
        self.assertEqual((await answer(bob, toTag="sxpa-000000000000")).code, 481)
        ok = await answer(bob)
        self.assertIn(ok.code, (200, 202), ok)  # 202 until bob's account is read
        tag = ok.header("to").rsplit("tag=", 1)[1]
        other = await answer(bob, event="dialog", toTag=tag)
        self.assertEqual((other.code, other.header("allow-events")), (489, "presence"), other)
        nobody = self.watcher("bob")
        since = len(nobody.received)
        nobody.subscribe("sip:nobody@example.test", gateway)
        unknown = await nobody.waitFor("final answer to SUBSCRIBE", isFinal, since)
        self.assertEqual(unknown.code, 404, unknown)

    @deferred
    async def test_refreshAndUnsubscribe(self) -> None:
        """
        bob refreshes his subscription in its dialog (200 and a NOTIFY
        with the new lifetime), then ends it with Expires 0 (a final
        NOTIFY, terminated;reason=timeout); a refresh after that gets 481.
        """
        await self.aliceLoggedIn()
        gateway = (LOOPBACK, self.gateway.sipPort)
        bob = self.watcher("bob")
        first = await self.subscribed(bob, aor("alice"))
        self.assertIn(first.code, (200, 202), first)
        tag = first.header("to").rsplit("tag=", 1)[1]
        await bob.waitFor("first NOTIFY", notifyWith(lambda p: True))

        def isNotify(m: Message) -> bool:
            return m.method == "NOTIFY"

        for expires in (120, 0):
            since = len(bob.received)
            bob.subscribe(aor("alice"), gateway, expires=expires, toTag=tag)
            answer = await bob.waitFor("final answer to the refresh", isFinal, since)
            self.assertEqual((answer.code, answer.header("expires")), (200, str(expires)), answer)
            state = (await bob.waitFor("NOTIFY after it", isNotify, since)).header(
                "subscription-state")
            if expires:
                # The new lifetime (the first was 300 s).
                name, _, left = state.partition(";expires=")
                self.assertEqual(name, "active", state)
                self.assertTrue(0 < int(left) <= expires, state)
            else:
                self.assertEqual(state, "terminated;reason=timeout")
        since = len(bob.received)
        bob.subscribe(aor("alice"), gateway, toTag=tag)
        gone = await bob.waitFor("final answer to a refresh of the ended dialog", isFinal, since)
        self.assertEqual(gone.code, 481, gone)

    @deferred
    async def test_stopEnds(self) -> None:
        """
        A gateway stopping ends its watchers' subscriptions with a final
        NOTIFY (terminated, reason=deactivated: they may subscribe again at
        once). (Last of the class: the gateway is started again.)
        """
        await self.aliceLoggedIn()
        bob = await self.activeWatcher("bob")
        mark = len(bob.received)
        await deferToThread(self.gateway.stop)
        try:
            ended = await bob.waitFor("final NOTIFY", lambda m: (
                m.method == "NOTIFY" and m.header("subscription-state").startswith("terminated")),
                mark)  # fmt: skip
            self.assertEqual(ended.header("subscription-state"), "terminated;reason=deactivated")
        finally:
            await deferToThread(self.gateway.start)
