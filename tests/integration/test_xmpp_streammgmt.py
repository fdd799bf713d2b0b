"""
XEP-0198 stream management against real servers (Prosody 0.12 with
mod_smacks, ejabberd 23.01 with mod_stream_mgmt): a network blip, made by
a TCP relay between the session and the server that the test cuts on both
sides (a reset each way, so the server sees no clean close), and the
session resumes: same full JID, the handlers see no new login, an ad-hoc
command in flight is answered, stanzas sent either way during the blip
arrive.

Everything listens on 127.0.0.1; waits are bounded and say what they
waited for; nothing asserts on timing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, TestCase
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from sipxmpp.testing.ports import LOOPBACK
from sipxmpp.testing.process import ServerProcess, requireBinaries
from sipxmpp.xmpp.session import SessionSettings, XMPPSession
from sipxmpp.xmpp.streammgmt import StreamNotResumed
from sipxmpp.xmpp.wokkelcompat import subprotocols

reactor: Any = _reactor
WAIT = 20.0
NS_COMMANDS = "http://jabber.org/protocol/commands"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


class _Half(Protocol):
    """
    One side of a relayed connection: bytes go to the other side, and a
    close is passed on unless the relay cut both.
    """

    def __init__(self, relay: Relay, peer: _Half | None = None) -> None:
        self.relay = relay
        self.peer = peer
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.relay.halves.add(self)
        if self.peer is None:
            if self.relay.blocked:
                self.transport.abortConnection()
                return
            # The session's side: hold its bytes until the server's side is up.
            self.transport.pauseProducing()
            reactor.connectTCP(*self.relay.target, _OutwardFactory(self))
        else:
            self.peer.peer = self
            self.peer.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.relay.halves.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _OutwardFactory(ClientFactory):
    def __init__(self, inward: _Half) -> None:
        self.inward = inward

    def buildProtocol(self, addr: Any) -> _Half:
        return _Half(self.inward.relay, self.inward)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if self.inward.transport is not None:
            self.inward.transport.abortConnection()


class Relay:
    """
    A TCP relay on loopback to C{target} that the test cuts: both sides
    are reset at once (the server sees no clean close), and while blocked
    new connections are reset as soon as they are accepted.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.blocked = False
        self.halves: set[_Half] = set()
        self.port = reactor.listenTCP(0, Factory.forProtocol(lambda: _Half(self)), interface=LOOPBACK)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port.getHost().port}"

    def cut(self, block: bool = True) -> None:
        self.blocked = block
        for half in list(self.halves):
            half.peer = None
            if half.transport is not None:
                half.transport.abortConnection()

    def unblock(self) -> None:
        self.blocked = False

    def stop(self) -> Deferred[None]:
        self.cut()
        d: Deferred[None] = self.port.stopListening()
        return d


class Peer(subprotocols.XMPPHandler):  # type: ignore[misc]
    """
    What one session's handlers saw: logins, losses, messages, presence,
    ad-hoc commands (answered when the test says).
    """

    def __init__(self) -> None:
        super().__init__()
        self.initialized = 0
        self.lost = 0
        self.messages: list[str] = []
        self.presences: list[str] = []
        self.commands: list[domish.Element] = []
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def connectionInitialized(self) -> None:
        self.initialized += 1
        self.xmlstream.addObserver("/message", self._onMessage)
        self.xmlstream.addObserver("/presence", self._onPresence)
        self.xmlstream.addObserver(f"/iq[@type='set']/command[@xmlns='{NS_COMMANDS}']", self._onCommand)
        self.xmlstream.send(domish.Element((None, "presence")))
        self._check()

    def connectionLost(self, reason: Failure) -> None:
        self.lost += 1
        super().connectionLost(reason)

    def _onMessage(self, element: domish.Element) -> None:
        self.messages.append(str(element.body or ""))
        self._check()

    def _onPresence(self, element: domish.Element) -> None:
        if element.getAttribute("type") in (None, "available"):
            self.presences.append(element["from"])
        self._check()

    def _onCommand(self, iq: domish.Element) -> None:
        iq.handled = True
        self.commands.append(iq)
        self._check()

    def answer(self, iq: domish.Element) -> None:
        result = domish.Element((None, "iq"))
        result["type"], result["id"], result["to"] = "result", iq["id"], iq["from"]
        command = result.addElement((NS_COMMANDS, "command"))
        command["node"] = iq.command["node"]  # type: ignore[index]
        command["status"] = "completed"
        self.xmlstream.send(result)

    def until(self, what: str, done: Callable[[], bool]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if done():
            d.callback(None)
            return d
        entry = (done, d)
        self._waiters.append(entry)

        def expire() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)
                d.errback(FailTest(f"no {what} within {WAIT:g} s"))

        call = reactor.callLater(WAIT, expire)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def _check(self) -> None:
        for entry in list(self._waiters):
            if entry[0]():
                self._waiters.remove(entry)
                entry[1].callback(None)


def message(to: str, body: str) -> domish.Element:
    element = domish.Element((None, "message"))
    element["to"], element["type"] = to, "chat"
    element.addElement("body", content=body)
    return element


async def stateIs(session: XMPPSession, prefix: str) -> None:
    """
    Wait until C{session}'s state starts with C{prefix}.
    """
    d: Deferred[None] = Deferred()
    previous = session.onStateChanged

    def changed(state: str) -> None:
        previous(state)
        if state.startswith(prefix) and not d.called:
            d.callback(None)

    session.onStateChanged = changed

    def expire() -> None:
        if not d.called:
            d.errback(FailTest(f"{session.jid.full()} not {prefix!r} within {WAIT:g} s: "
                               f"{session.state}"))  # fmt: skip

    call = reactor.callLater(WAIT, expire)
    try:
        if not session.state.startswith(prefix):
            await d
    finally:
        session.onStateChanged = previous
        if call.active():
            call.cancel()


def deferred(f: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Deferred[None]]:
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(self))

    run.__name__ = f.__name__
    run.__doc__ = f.__doc__
    return run


class StreamManagementMixin:
    """
    The scenarios; subclasses say which server runs them.
    """

    timeout = 90

    def makeServer(self) -> ServerProcess:
        raise NotImplementedError()

    def session(self, server: Any, user: str, address: str, resource: str,
                streamManagement: bool = True) -> tuple[XMPPSession, Peer]:  # fmt: skip
        settings = SessionSettings(resource=resource, server=address, requireTLS=True,
                                   pingInterval=30, pingTimeout=10, failedRetryDelay=600,
                                   streamManagement=streamManagement)  # fmt: skip
        session = XMPPSession(reactor, JID(server.jid(user)), USERS[user], settings,
                              caFile=server.caFile)  # fmt: skip
        peer = Peer()
        session.addHandler(peer)
        session.start()
        self.addCleanup(session.stop)  # type: ignore[attr-defined]
        return session, peer

    async def pair(self) -> tuple[Any, Relay, XMPPSession, Peer, XMPPSession, Peer]:
        """
        Start the server; log alice in through a relay (stream management
        on) and bob, a contact, straight to the server (off).
        """
        server = self.makeServer()
        self.addCleanup(server.stop)  # type: ignore[attr-defined]
        relay = Relay((server.host, server.port))  # type: ignore[attr-defined]
        self.addCleanup(relay.stop)  # type: ignore[attr-defined]
        alice, aliceSaw = self.session(server, "alice", relay.address, "gw")
        bob, bobSaw = self.session(server, "bob", f"{server.host}:{server.port}", "probe",  # type: ignore[attr-defined]
                                   streamManagement=False)  # fmt: skip
        await stateIs(alice, "connected")
        await stateIs(bob, "connected")
        aliceFull = alice.jid.full()
        self.assertEqual(aliceFull, f"{server.jid('alice')}/gw")  # type: ignore[attr-defined]
        self.assertIsNotNone(alice.management.resumeID, "the server did not grant resumption")  # type: ignore[attr-defined]
        await bobSaw.until("presence from alice's session", lambda: aliceFull in bobSaw.presences)
        return server, relay, alice, aliceSaw, bob, bobSaw

    async def commandInFlight(self, alice: XMPPSession, bob: XMPPSession,
                              bobSaw: Peer) -> Deferred[domish.Element]:  # fmt: skip
        """
        alice sends bob an ad-hoc command (XEP-0050); return its answer
        once bob has it (and has not answered).
        """
        command = domish.Element((None, "iq"))
        command["type"], command["to"] = "set", bob.jid.full()
        node = command.addElement((NS_COMMANDS, "command"))
        node["node"], node["action"] = "http://jabber.org/protocol/rc#set-status", "execute"
        answer = alice.sendRequest(command, timeout=WAIT * 2)
        await bobSaw.until("alice's command", lambda: len(bobSaw.commands) == 1)
        return answer

    @deferred
    async def test_blip(self) -> None:
        """
        alice's session goes through the relay, bob's straight to the
        server. alice sends bob an ad-hoc command; the relay is cut before
        bob answers; bob answers and writes to alice, alice writes to bob,
        all during the blip. Once the relay lets connections through
        again, alice's stream is resumed: same full JID, her handler saw
        one login and no loss, the command's answer, bob's message and
        hers arrive, and bob saw her available once.
        """
        server, relay, alice, aliceSaw, bob, bobSaw = await self.pair()
        aliceFull = alice.jid.full()
        answer = await self.commandInFlight(alice, bob, bobSaw)
        bob.send(message(aliceFull, "before"))
        await aliceSaw.until("bob's message before", lambda: "before" in aliceSaw.messages)

        relay.cut()
        await stateIs(alice, "resuming")
        self.assertTrue(alice.ready)
        bobSaw.answer(bobSaw.commands[0])
        bob.send(message(aliceFull, "from bob during the blip"))
        self.assertTrue(alice.send(message(bob.jid.full(), "from alice during the blip")))
        relay.unblock()

        result = await answer
        self.assertEqual(result["type"], "result")
        self.assertEqual(result.command["status"], "completed")  # type: ignore[index]
        await aliceSaw.until("bob's message", lambda: "from bob during the blip" in aliceSaw.messages)
        await bobSaw.until("alice's message", lambda: "from alice during the blip" in bobSaw.messages)
        self.assertEqual(alice.state, "connected")
        self.assertEqual(alice.jid.full(), aliceFull)
        self.assertEqual(alice.management.resumptions, 1)  # type: ignore[attr-defined]
        self.assertEqual((aliceSaw.initialized, aliceSaw.lost), (1, 0))
        # A new login would have sent bob her presence again, before her
        # message (one sender, delivered in order).
        self.assertEqual(bobSaw.presences.count(aliceFull), 1)

        # Still a working stream, both ways; and the counts were right: a
        # stanza either side had already handled was not sent again (that
        # would have come before these).
        alice.send(message(bob.jid.full(), "after"))
        bob.send(message(aliceFull, "after"))
        await bobSaw.until("alice's message after", lambda: "after" in bobSaw.messages)
        await aliceSaw.until("bob's message after", lambda: "after" in aliceSaw.messages)
        self.assertEqual(aliceSaw.messages, ["before", "from bob during the blip", "after"])
        self.assertEqual(bobSaw.messages, ["from alice during the blip", "after"])
        self.assertEqual(len(bobSaw.commands), 1)


class ProsodyStreamManagementTests(StreamManagementMixin, TestCase):
    def makeServer(self) -> ServerProcess:
        requireBinaries("prosody", "prosodyctl", "openssl")
        from sipxmpp.testing.prosody import ProsodyServer

        server = ProsodyServer(users=USERS, streamManagement=True)
        server.subscribe("alice", "bob")
        server.start()
        return server


class EjabberdStreamManagementTests(StreamManagementMixin, TestCase):
    def makeServer(self) -> ServerProcess:
        requireBinaries("erl", "ejabberdctl", "openssl")
        from sipxmpp.testing.ejabberd import EjabberdServer

        server = EjabberdServer(users=USERS, streamManagement=True)
        server.start()
        server.subscribe("alice", "bob")
        return server

    @deferred
    async def test_notResumed(self) -> None:
        """
        The server ends alice's session while it waits to be resumed
        (ejabberdctl kick_session): the command in flight fails saying the
        stream was not resumed, and the session logs in afresh, with the
        same full JID; her handler sees the loss and a second login.
        """
        server, relay, alice, aliceSaw, bob, bobSaw = await self.pair()
        aliceFull = alice.jid.full()
        answer = await self.commandInFlight(alice, bob, bobSaw)
        relay.cut()
        await stateIs(alice, "resuming")
        await threads.deferToThread(server.ejabberdctl, "kick_session", "alice",
                                    server.domain, "gw", "test")  # fmt: skip
        relay.unblock()
        try:
            await answer
        except StreamNotResumed as e:
            self.assertIn("could not resume", str(e))
        else:
            self.fail("the command was answered on a stream the server had ended")
        await stateIs(alice, "connected")
        await aliceSaw.until("a fresh login", lambda: aliceSaw.initialized == 2)
        self.assertEqual(aliceSaw.lost, 1)
        self.assertEqual(alice.jid.full(), aliceFull)
        self.assertEqual(alice.management.resumptions, 0)
        self.assertIsNotNone(alice.management.resumeID, "stream management is on again")


class _RelayedStack:
    """
    The end-to-end stack (L{tests.integration.test_e2e.Stack}) with
    XEP-0198 on Prosody and the gateway's sessions through a L{Relay};
    the users' clients and the watcher connect straight to Prosody. One
    per test, stopped by its cleanups.
    """

    def get(self, test: Any) -> Any:
        from tests.integration.test_e2e import Stack

        stack = Stack(provision=["alice"])
        stack.prosody.streamManagement = True
        stack.relay = Relay((stack.prosody.host, stack.prosody.port))  # type: ignore[attr-defined]
        stack.gatewaySettings[("xmpp", "server")] = stack.relay.address  # type: ignore[attr-defined]
        test.addCleanup(stack.relay.stop)  # type: ignore[attr-defined]
        try:
            stack.start()
        finally:
            test.addCleanup(stack.stop)
        return stack


def _e2eBase() -> type:
    from tests.integration.test_e2e import E2ETestCase

    return E2ETestCase


class EndToEndBlipTests(_e2eBase()):  # type: ignore[misc]
    """
    The end-to-end call (dnd during the call, the client's own status
    after it) with stream management on, across a network blip between
    the gateway and Prosody in the middle of the call.
    """

    shared = _RelayedStack()

    @deferred
    async def test_callEndsDuringBlip(self) -> None:
        """
        alice's client is at dnd for her call when the gateway's link to
        Prosody is cut; the call ends while it is down. The gateway
        resumes its stream (no new login: /status goes resuming, then
        connected, never authenticating), and the command restoring her
        client, sent during the blip, arrives: her client shows its own
        status again.
        """
        from tests.integration.test_e2e import READY, aor

        relay: Relay = self.stack.relay
        await self.provisionedPhone("alice")
        outside = self.registerOutside("x-alice")
        uas = self.startPhone("uas", "x-alice", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-alice", "alice", pauseMs=3000)
        await self.expectBusy("alice", mark)

        relay.cut()
        await self.expectStatus("alice", "xmpp", lambda v: v.startswith("resuming"), "resuming")
        await self.finished("alice's call during the blip", call)
        await self.finished("x-alice's phone", uas)
        await self.expectTelephony("alice", "online")
        relay.unblock()

        await self.expectStatus("alice", "xmpp", lambda v: v == READY, "resumed")
        await self.expectBack("alice", mark)
        events = [e["text"] for e in self.userStatus("alice").get("events", [])]  # type: ignore[attr-defined]
        blip = max(i for i, text in enumerate(events) if text.startswith("XMPP session resuming"))
        self.assertEqual([t for t in events[blip:] if t.startswith("XMPP session")],
                         [events[blip], "XMPP session connected"], f"{aor('alice')}: {events}")
