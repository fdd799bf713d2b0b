"""
The XMPP publisher against real servers (Prosody with STARTTLS and a test
CA; ejabberd), with slixmpp desktop clients (L{xmppclients}) as the user's
own clients and as a watching contact.

Each scenario asserts what a contact sees: the user's presence during and
after a call. Everything listens on 127.0.0.1. Waits are bounded and say
what they waited for; nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, TestCase
from twisted.words.protocols.jabber.jid import JID

from sipxmpp.telephony.events import Event, StateChange, TelephonyState
from sipxmpp.testing.process import ServerProcess, requireBinaries
from sipxmpp.testing.tls import TestCA
from sipxmpp.xmpp.accounts import Account, MemoryAccountDirectory
from sipxmpp.xmpp.publisher import Publisher, PublisherSettings
from sipxmpp.xmpp.session import SessionFactory, SessionSettings

reactor: Any = _reactor
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xmppclients.py")
WAIT = 15.0
S = TelephonyState

USERS = {
    "alice": "alice-pw",  # case b: a Psi-like client with remote control
    "carol": "carol-pw",  # case a: only a client without remote control
    "erin": "erin-pw",  # changes her status by hand during a call
    "dave": "dave-pw",  # provisioned with a wrong password
    "bob": "bob-pw",  # the contact watching everyone
}
WATCHED = ("alice", "carol", "erin", "dave")


def deferred(f: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Deferred[None]]:
    def run(self: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(f(self))

    run.__name__ = f.__name__
    run.__doc__ = f.__doc__
    return run


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class DesktopClient(ProcessProtocol):
    """
    One slixmpp client in a subprocess: events in, commands out.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], Deferred[dict[str, Any]]]] = []
        self.ended: Deferred[None] = Deferred()
        self.stderr = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            for waiter in list(self._waiters):
                match, d = waiter
                if match(event):
                    self._waiters.remove(waiter)
                    d.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        for _, d in self._waiters:
            d.errback(FailTest(f"{self.name} exited: {reason.value}\n{self.stderr.decode(errors='replace')}"))
        self._waiters = []
        self.ended.callback(None)

    def waitFor(self, what: str, match: Callable[[dict[str, Any]], bool],
                since: int = 0, timeout: float = WAIT) -> Deferred[dict[str, Any]]:  # fmt: skip
        """
        Fire with the first event from index C{since} on that matches.
        """
        for event in self.events[since:]:
            if match(event):
                d0: Deferred[dict[str, Any]] = Deferred()
                d0.callback(event)
                return d0
        d: Deferred[dict[str, Any]] = Deferred()
        entry = (match, d)
        self._waiters.append(entry)

        def expire() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)
                recent = "\n  ".join(json.dumps(e) for e in self.events[-12:])
                d.errback(FailTest(
                    f"{self.name}: no {what} within {timeout:g} s; last events:\n  {recent}\n"
                    f"stderr: {self.stderr.decode(errors='replace')[-1500:]}"
                ))  # fmt: skip

        call = reactor.callLater(timeout, expire)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def presenceFrom(self, full: str, since: int = 0, **fields: Any) -> Deferred[dict[str, Any]]:
        def match(e: dict[str, Any]) -> bool:
            return (
                e.get("event") == "presence"
                and e.get("from") == full
                and all(e.get(k) == v for k, v in fields.items())
            )

        return self.waitFor(f"presence from {full} with {fields}", match, since)

    def send(self, **command: Any) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(command).encode() + b"\n")

    def mark(self) -> int:
        return len(self.events)


class PublisherIntegrationMixin:
    """
    The scenarios; subclasses say which server runs them.
    """

    timeout = 60
    server: ClassVar[Any] = None
    _remaining: ClassVar[int]
    settings = PublisherSettings(commandTimeout=5, logoutGrace=300)

    # -- fixtures ------------------------------------------------------------

    @classmethod
    def makeServer(cls) -> Any:
        raise NotImplementedError()

    def setUp(self) -> None:
        # One server per class, started by the first test that needs it and
        # stopped after the class's last test (trial has no tearDownClass);
        # when only some tests run, the harness stops it at exit.
        cls = type(self)
        if "_remaining" not in cls.__dict__:
            cls._remaining = len([n for n in dir(cls) if n.startswith("test_")])
        self.addCleanup(self._testDone)  # type: ignore[attr-defined]

    def _testDone(self) -> None:
        cls = type(self)
        cls._remaining -= 1
        server = cls.__dict__.get("server")
        if cls._remaining == 0 and server is not None:
            server.stop()
            cls.server = None

    def serverUp(self) -> Any:
        cls = type(self)
        if cls.__dict__.get("server") is None:
            cls.server = cls.makeServer()
        return cls.server

    def startClient(self, user: str, resource: str, rc: str = "none", priority: int = 0,
                    status: str = "", password: str | None = None) -> Deferred[DesktopClient]:  # fmt: skip
        server = self.serverUp()
        client = DesktopClient(f"{user}/{resource}")
        args = [
            sys.executable, CLIENTS, "--jid", f"{user}@{server.domain}/{resource}",
            "--password", password or USERS[user], "--host", server.host,
            "--port", str(server.port), "--ca-file", server.caFile,
            "--priority", str(priority), "--status", status, "--rc", rc,
        ]  # fmt: skip
        reactor.spawnProcess(client, sys.executable, args, env=dict(os.environ))

        async def stop() -> None:
            if client.transport is not None and not client.ended.called:
                client.send(op="quit")
                stopper = reactor.callLater(5, lambda: client.ended.called or client.transport.signalProcess("KILL"))
                await client.ended
                if stopper.active():
                    stopper.cancel()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))  # type: ignore[attr-defined]
        return client.waitFor("ready", lambda e: e.get("event") in ("ready", "failed")).addCallback(
            lambda e: client if e["event"] == "ready" else self.fail(f"{client.name}: {e}")  # type: ignore[attr-defined]
        )

    def startPublisher(self, accounts: list[Account], caFile: str | None = None,
                       settings: PublisherSettings | None = None) -> Publisher:  # fmt: skip
        server = self.serverUp()
        sessions = SessionFactory(
            reactor,
            SessionSettings(server=self.xmppServer(server), requireTLS=True,
                            pingInterval=30, pingTimeout=10, failedRetryDelay=600),
            caFile=caFile or server.caFile,
        )  # fmt: skip
        publisher = Publisher(reactor, settings or self.settings, MemoryAccountDirectory(accounts), sessions)
        publisher.startService()
        self.addCleanup(publisher.stopService)  # type: ignore[attr-defined]
        return publisher

    def xmppServer(self, server: Any) -> str:
        """
        Where the publisher's sessions connect: the server's c2s port.
        """
        return f"{server.host}:{server.port}"

    def account(self, user: str, password: str | None = None) -> Account:
        server = self.serverUp()
        return Account(f"sip:{user}@{server.domain}", JID(server.jid(user)), password or USERS[user])

    def say(self, publisher: Publisher, user: str, state: TelephonyState) -> None:
        server = self.serverUp()
        publisher.telephonyStateChanged(
            StateChange(f"sip:{user}@{server.domain}", Event.ONLINE, state, S.ONLINE, reactor.seconds())
        )

    def gatewayJID(self, user: str) -> str:
        return f"{self.serverUp().jid(user)}/sipxmpp"

    # -- scenarios -----------------------------------------------------------

    @deferred
    async def test_remoteControl(self) -> None:
        """
        Case b: contacts see the user's Psi-like client dnd with the text
        during the call and its original status after; the command carried
        no sessionid and the client's priority was kept.
        """
        bob = await self.startClient("bob", "watch")
        psi = await self.startClient("alice", "psi", rc="psi", priority=5, status="working")
        await self.startClient("alice", "gajim", priority=1, status="gajim here")
        publisher = self.startPublisher([self.account("alice")])
        self.say(publisher, "alice", S.ONLINE)
        await bob.presenceFrom(self.gatewayJID("alice"), priority=-1)

        mark = bob.mark()
        self.say(publisher, "alice", S.ON_THE_PHONE)
        rc = await psi.waitFor("rc#set-status", lambda e: e.get("event") == "rc")
        self.assertIsNone(rc["sessionid"])
        self.assertEqual(rc["values"]["status-priority"], "5")
        seen = await bob.presenceFrom("alice@example.test/psi", mark, show="dnd",
                                      status=self.settings.statusText)  # fmt: skip
        self.assertEqual(seen["priority"], 5)

        mark = bob.mark()
        self.say(publisher, "alice", S.ONLINE)
        back = await bob.presenceFrom("alice@example.test/psi", mark, status="working")
        self.assertEqual((back["show"], back["priority"]), (None, 5))

    @deferred
    async def test_userChangeWins(self) -> None:
        """
        The user sets another status by hand during the call: after the
        call it stays, and no restore command is sent.
        """
        bob = await self.startClient("bob", "watch")
        psi = await self.startClient("erin", "psi", rc="psi", priority=3, status="at my desk")
        publisher = self.startPublisher([self.account("erin")])
        self.say(publisher, "erin", S.ONLINE)
        await bob.presenceFrom(self.gatewayJID("erin"), priority=-1)
        self.say(publisher, "erin", S.ON_THE_PHONE)
        await bob.presenceFrom("erin@example.test/psi", show="dnd", status=self.settings.statusText)

        mark = bob.mark()
        psi.send(op="presence", show="away", status="gone fishing", priority=3)
        await bob.presenceFrom("erin@example.test/psi", mark, show="away", status="gone fishing")
        # The gateway has seen it once its own session has: wait for it.
        user = publisher.users["sip:erin@example.test"]
        for _ in range(100):
            presence = user.tracker.get("psi")
            if presence is not None and presence.show == "away":
                break
            await sleep(0.05)
        rcBefore = len([e for e in psi.events if e.get("event") == "rc"])
        self.say(publisher, "erin", S.ONLINE)
        await user.whenIdle()
        self.assertEqual(len([e for e in psi.events if e.get("event") == "rc"]), rcBefore)
        self.assertIsNone(user.shown)

    @deferred
    async def test_fallbackOwnResource(self) -> None:
        """
        Case a: no client offers remote control; contacts see the gateway's
        resource dnd above the user's priority, then back below zero.
        """
        bob = await self.startClient("bob", "watch")
        await self.startClient("carol", "dino", priority=2, status="dino")
        publisher = self.startPublisher([self.account("carol")])
        self.say(publisher, "carol", S.ONLINE)
        gateway = self.gatewayJID("carol")
        await bob.presenceFrom(gateway, priority=-1)
        mark = bob.mark()
        self.say(publisher, "carol", S.ON_THE_PHONE)
        busy = await bob.presenceFrom(gateway, mark, show="dnd", status=self.settings.statusText)
        self.assertEqual(busy["priority"], 3)
        mark = bob.mark()
        self.say(publisher, "carol", S.ONLINE)
        idle = await bob.presenceFrom(gateway, mark, priority=-1)
        self.assertEqual((idle["show"], idle["status"]), (None, None))

    @deferred
    async def test_wrongPasswordIsolated(self) -> None:
        """
        One account's wrong password fails that session (state says why,
        the log never has the secret) and leaves the others working.
        """
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[attr-defined]
        bob = await self.startClient("bob", "watch")
        secret = "not-daves-password-42"
        publisher = self.startPublisher([self.account("dave", secret), self.account("carol")])
        self.say(publisher, "dave", S.ONLINE)
        self.say(publisher, "carol", S.ONLINE)
        await bob.presenceFrom(self.gatewayJID("carol"), priority=-1)
        dave = publisher.users["sip:dave@example.test"].session
        for _ in range(200):
            if dave.state.startswith("failed"):
                break
            await sleep(0.05)
        self.assertTrue(dave.state.startswith("failed: authentication"), dave.state)
        self.assertIn("not-authorized", dave.state)
        mark = bob.mark()
        self.say(publisher, "carol", S.ON_THE_PHONE)
        await bob.presenceFrom(self.gatewayJID("carol"), mark, show="dnd")
        text = "\n".join(formatEvent(e) + repr(e) for e in events)
        self.assertIn("not-authorized", text)
        self.assertNotIn(secret, text)

    @deferred
    async def test_untrustedCertificate(self) -> None:
        """
        A server certificate from a CA we do not trust fails loudly.
        """
        other = TestCA(self.mktemp(), "some other CA")  # type: ignore[attr-defined]
        publisher = self.startPublisher([self.account("carol")], caFile=other.caFile)
        self.say(publisher, "carol", S.ONLINE)
        session = publisher.users["sip:carol@example.test"].session
        for _ in range(200):
            if session.state.startswith("failed"):
                break
            await sleep(0.05)
        self.assertTrue(session.state.startswith("failed: certificate"), session.state)
        self.assertFalse(session.ready)


class ProsodyPublisherTests(PublisherIntegrationMixin, TestCase):
    @classmethod
    def makeServer(cls) -> ServerProcess:
        requireBinaries("prosody", "prosodyctl", "openssl")
        from sipxmpp.testing.prosody import ProsodyServer

        server = ProsodyServer(users=USERS)
        for user in WATCHED:
            server.subscribe(user, "bob")
        server.start()
        return server


class EjabberdPublisherTests(PublisherIntegrationMixin, TestCase):
    @classmethod
    def makeServer(cls) -> ServerProcess:
        requireBinaries("erl", "ejabberdctl", "openssl")
        from sipxmpp.testing.ejabberd import EjabberdServer

        server = EjabberdServer(users=USERS)
        server.start()
        for user in WATCHED:
            server.subscribe(user, "bob")
        return server
