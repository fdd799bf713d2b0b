"""
End to end (issue 7): sipp phones, the gateway as their edge proxy in front
of a real Kamailio registrar, a real Prosody, the users' slixmpp desktop
clients (L{xmppclients}: a Psi-style client answering XEP-0146, or one
without remote control) and a watching contact in every user's roster
(L{sipxmpp.testing.demo.Watcher}, a plain-socket client independent of both
the gateway's and slixmpp's XMPP stacks).

Each test asserts what the watcher sees over XMPP -- the user's client at
dnd "I am currently on the phone" during a call and its own status again
after it -- and, where useful, the gateway's C{/status}. Everything listens
on 127.0.0.1. Waits are bounded and name what they waited for; nothing
asserts on timing.

Prosody, Kamailio and the gateway are shared by the tests of a class (each
test has its own users); the two restart tests have a stack of their own.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from sipxmpp.testing.demo import Sighting, Watcher
from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.sipp import SippProcess, SippResult, SippRunner
from sipxmpp.testing.xmppprobe import login
from tests.integration.test_xmpp_publisher import CLIENTS, DesktopClient, deferred, sleep

reactor: Any = _reactor

DOMAIN = "example.test"
WAIT = 15.0
PHONE = "I am currently on the phone"
RINGING = "My phone is ringing"
HOLD = "I have a call on hold"
# The session state /status shows for a logged-in session.
READY = "connected"

# Every user of these tests, with the XMPP password of its account. Each
# test has its own users, so tests sharing a gateway do not meet.
USERS = {
    "watcher": "watcher-pw",
    "alice": "alice-pw",  # outbound call, case b
    "bob": "bob-pw",  # inbound call, case b
    "carol": "carol-pw",  # calls dave: both behind the gateway
    "dave": "dave-pw",
    "erin": "erin-pw",  # calls frank, who rings and is busy
    "frank": "frank-pw",
    "grace": "grace-pw",  # calls heidi and cancels while it rings
    "heidi": "heidi-pw",
    "ivan": "ivan-pw",  # calls judy, holds and resumes
    "judy": "judy-pw",
    "kim": "kim-pw",  # two phones, two calls
    "mallory": "mallory-pw",  # provisioned with a wrong password
    "nina": "nina-pw",  # her call goes on regardless
    "oscar": "oscar-pw",  # a client without remote control: case a
    "peggy": "peggy-pw",  # Prosody restarts during her call
    "quinn": "quinn-pw",  # ... with quinn, who has no client at all
    "rita": "rita-pw",  # the gateway restarts during her call
    "sam": "sam-pw",  # his call ends while Prosody is down
}
WRONG_PASSWORD = "not-mallorys-password"


def aor(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


def normalStatus(user: str) -> str:
    """
    The status text a user's own client starts with (what must come back).
    """
    return f"{user} at the desk"


class Stack:
    """
    Prosody (every user, each in the watcher's roster and the watcher in
    theirs), Kamailio as the registrar, and the gateway in front of it with
    C{provision} users' accounts added. Prosody and the gateway keep their
    files in this stack's folder, so either can be stopped and started
    again with its state (and on the same ports).
    """

    def __init__(self, provision: Iterable[str] = (),
                 gatewaySettings: dict[tuple[str, str], str] | None = None,
                 bosh: bool = False, prosodyOptions: dict[str, Any] | None = None) -> None:
        """
        @param prosodyOptions: more L{ProsodyServer} arguments (its TLS
            version, how it stores passwords).
        """
        from sipxmpp.testing.prosody import ProsodyServer

        self.baseDir = tempfile.mkdtemp(prefix="sipxmpp-e2e-")
        # SIPXMPP_E2E_PROSODY_LOG=debug: Prosody logs every stanza.
        self.prosody = ProsodyServer(users=USERS, port=freeTCPPort(),
                                     baseDir=os.path.join(self.baseDir, "prosody"),
                                     logLevel=os.environ.get("SIPXMPP_E2E_PROSODY_LOG", "info"),
                                     bosh=bosh, **(prosodyOptions or {}))
        for user in USERS:
            if user != "watcher":
                self.prosody.subscribe(user, "watcher")
        self.kamailio = KamailioServer()
        self.gateway: GatewayServer | None = None
        self.provision = list(provision)
        self.gatewaySettings = gatewaySettings or {}

    @property
    def running(self) -> bool:
        return (self.prosody.running and self.kamailio.running
                and self.gateway is not None and self.gateway.running)

    @property
    def registrar(self) -> str:
        return f"{self.kamailio.host}:{self.kamailio.port}"

    def start(self) -> None:
        self.prosody.start()
        self.kamailio.start()
        transport: dict[tuple[str, str], str] = {}
        if self.prosody.httpsPort is not None:
            # Every session over BOSH (XEP-0206) instead of c2s.
            transport = {("xmpp", "server"): "", ("xmpp", "bosh_url"): self.prosody.boshURL}
        self.gateway = GatewayServer(
            upstreamPort=self.kamailio.port,
            xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile,
            baseDir=os.path.join(self.baseDir, "gateway"),
            settings={("xmpp", "command_timeout"): "5",
                      ("xmpp", "reconnect_max_delay"): "2", **transport,
                      **self.gatewaySettings},
        )
        self.gateway.start()
        gateway = self.gateway

        def add(user: str) -> None:
            password = WRONG_PASSWORD if user == "mallory" else USERS[user]
            gateway.addAccount(aor(user), jid(user), password)

        # sipxmpp-admin takes a second to start: provision in parallel.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(add, self.provision))

    def stop(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            try:
                self.kamailio.stop()
            finally:
                self.prosody.stop()
                if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
                    shutil.rmtree(self.baseDir, ignore_errors=True)


def describe(sightings: Iterable[Sighting]) -> str:
    lines = [s.describe(0.0) for s in sightings]
    return "\n".join(lines[-25:]) if lines else "  (nothing)"


class Watch:
    """
    The watcher account's client (L{Watcher}), with waits for what it saw.
    """

    def __init__(self, test: E2ETestCase, stack: Stack) -> None:
        self.test = test
        prosody = stack.prosody
        self.probe = login(LOOPBACK, prosody.port, DOMAIN, "watcher", USERS["watcher"],
                           prosody.caFile, "watch")
        self.watcher = Watcher(self.probe)
        self.probe.sendPresence()
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.probe.close()

    @property
    def sightings(self) -> list[Sighting]:
        return list(self.watcher.sightings)

    def mark(self) -> int:
        return len(self.watcher.sightings)

    def of(self, full: str, since: int = 0) -> list[Sighting]:
        """
        What was seen of C{full} (a full JID) from index C{since} on.
        """
        return [s for s in self.sightings[since:] if s.jid == full]

    def ofUser(self, full: str, since: int = 0) -> list[Sighting]:
        """
        What was seen of any resource of C{full}'s user from C{since} on.
        """
        bare = full.split("/")[0]
        return [s for s in self.sightings[since:] if s.jid.split("/")[0] == bare]

    async def expect(self, full: str, since: int = 0, timeout: float = WAIT,
                     **fields: Any) -> Sighting:
        """
        Wait for a presence of C{full} from index C{since} on with the
        given L{Sighting} fields (C{show=None} means no C{<show/>}).
        """
        wanted = {k: ("" if v is None else v) for k, v in fields.items()}

        def match(s: Sighting) -> bool:
            return s.jid == full and all(getattr(s, k) == v for k, v in wanted.items())

        deadline = time.monotonic() + timeout
        while True:
            for s in self.sightings[since:]:
                if match(s):
                    return s
            if time.monotonic() > deadline:
                self.test.fail(f"the watcher saw no presence of {full} with {fields} within "
                               f"{timeout:g} s; of that user it saw:\n"
                               f"{describe(self.ofUser(full, since))}")
            await sleep(0.05)

    async def expectLatest(self, full: str, timeout: float = WAIT, **fields: Any) -> Sighting:
        """
        Wait until the latest presence of C{full} has the given fields.
        """
        wanted = {k: ("" if v is None else v) for k, v in fields.items()}
        deadline = time.monotonic() + timeout
        while True:
            seen = self.of(full)
            if seen and all(getattr(seen[-1], k) == v for k, v in wanted.items()):
                return seen[-1]
            if time.monotonic() > deadline:
                self.test.fail(f"the latest presence of {full} the watcher saw is not {fields} "
                               f"after {timeout:g} s; it saw:\n{describe(seen)}")
            await sleep(0.05)


def statuses(sightings: Iterable[Sighting]) -> list[tuple[str, str]]:
    """
    (show, status) of each presence, consecutive repeats folded.
    """
    result: list[tuple[str, str]] = []
    for s in sightings:
        item = (s.show if s.available else "unavailable", s.status)
        if not result or result[-1] != item:
            result.append(item)
    return result


class E2ETestCase(TestCase):
    """
    Base: a stack shared by the tests of the class, a watcher, sipp, and
    desktop clients per test.
    """

    timeout = 90
    shared: SharedServer[Any]

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl", "kamailio", "sipp")
        self.stack: Stack = self.shared.get(self)
        assert self.stack.gateway is not None
        self.gateway: GatewayServer = self.stack.gateway
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)
        self.watch = Watch(self, self.stack)
        self.addCleanup(self.watch.stop)

    # -- XMPP ------------------------------------------------------------

    async def startClient(self, user: str, resource: str, rc: str = "psi", priority: int = 5,
                          reconnect: float | None = None) -> DesktopClient:
        """
        Log C{user}'s desktop client in (a Psi-style one answering remote
        control with C{rc="psi"}, one without with C{"none"}), at
        L{normalStatus} and C{priority}; with C{reconnect}, it logs in again
        that many seconds after the server went away.
        """
        prosody = self.stack.prosody
        client = DesktopClient(f"{user}/{resource}")
        args = [sys.executable, CLIENTS, "--jid", f"{jid(user)}/{resource}",
                "--password", USERS[user], "--host", prosody.host, "--port", str(prosody.port),
                "--ca-file", prosody.caFile, "--priority", str(priority),
                "--status", normalStatus(user), "--rc", rc]
        if reconnect is not None:
            args += ["--reconnect", "--reconnect-delay", str(reconnect)]
        reactor.spawnProcess(client, sys.executable, args, env=dict(os.environ))

        def kill() -> None:
            if not client.ended.called and client.transport is not None:
                client.transport.signalProcess("KILL")

        async def stop() -> None:
            if client.transport is not None and not client.ended.called:
                client.send(op="quit")
                killer = reactor.callLater(5, kill)
                await client.ended
                if killer.active():
                    killer.cancel()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        event = await client.waitFor("ready", lambda e: e.get("event") in ("ready", "failed"))
        if event["event"] != "ready":
            self.fail(f"{client.name} could not log in: {event}")
        await self.watch.expect(f"{jid(user)}/{resource}", status=normalStatus(user))
        return client

    # -- SIP -------------------------------------------------------------

    def register(self, user: str, port: int | None = None) -> int:
        """
        Register C{user}'s phone through the gateway from a fresh port (or
        C{port}); return the port, where its UAS must then listen.
        """
        port = port or freeSIPPort()
        result = self.sipp.register(self.gateway.address, user, DOMAIN, expires=300,
                                    localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def registerOutside(self, user: str) -> int:
        """
        Register a phone directly at Kamailio: someone not behind us.
        """
        port = freeSIPPort()
        result = self.sipp.register(self.stack.registrar, user, DOMAIN, expires=300,
                                    localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def startCall(self, scenario: str, target: str, callee: str, caller: str,
                  localPort: int | None = None, pauseMs: int = 2000) -> SippProcess:
        """
        Start a UAC in the background; each of its pauses lasts C{pauseMs}.
        """
        return self.sipp.start(scenario, target, service=callee, localPort=localPort,
                               keys={"domain": DOMAIN, "caller": caller}, timeout=40,
                               extraArgs=["-d", str(pauseMs)], waitBound=False)

    def startPhone(self, scenario: str, user: str, port: int, pauseMs: int = 0) -> SippProcess:
        """
        Start C{user}'s UAS on its registered C{port}.
        """
        extra = ["-d", str(pauseMs)] if pauseMs else []
        return self.sipp.start(scenario, service=user, localPort=port, timeout=40,
                               extraArgs=extra)

    async def finished(self, what: str, sipp: SippProcess, timeout: float = 40.0) -> SippResult:
        """
        Wait (without blocking the reactor) for C{sipp} to end; assert that
        its one call succeeded.
        """
        deadline = time.monotonic() + timeout
        while sipp.running:
            if time.monotonic() > deadline:
                result = sipp.stop()
                self.fail(f"{what}: sipp still running after {timeout:g} s\n{result.describe()}")
            await sleep(0.05)
        result = sipp.wait(1)
        self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                         f"{what}: {result.describe()}")
        return result

    # -- the gateway -----------------------------------------------------

    def userStatus(self, user: str) -> dict[str, str]:
        users = self.gateway.status()["users"]
        assert isinstance(users, dict)
        entry = users.get(aor(user))
        return entry if isinstance(entry, dict) else {"telephony": "offline", "xmpp": "absent"}

    async def expectStatus(self, user: str, key: str, accept: Callable[[str], bool],
                           what: str, timeout: float = WAIT) -> str:
        """
        Poll C{/status} until C{user}'s C{key} ("telephony" or "xmpp") is
        accepted; fail with every value seen meanwhile.
        """
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            value = str(self.userStatus(user).get(key))
            if not seen or seen[-1] != value:
                seen.append(value)
            if accept(value):
                return value
            if time.monotonic() > deadline:
                self.fail(f"/status: {aor(user)} {key} not {what} within {timeout:g} s; "
                          f"seen: {seen}")
            await sleep(0.05)

    async def expectTelephony(self, user: str, state: str, timeout: float = WAIT) -> None:
        await self.expectStatus(user, "telephony", lambda v: v == state, repr(state), timeout)

    async def loggedIn(self, user: str) -> None:
        """
        Wait until the gateway's session for C{user} is up and contacts see
        its resource below zero.
        """
        await self.expectStatus(user, "xmpp", lambda v: v == READY, repr(READY))
        await self.watch.expect(f"{jid(user)}/sipxmpp", priority=-1, show=None)

    async def provisionedPhone(self, user: str, rc: str = "psi",
                               reconnect: float | None = None) -> tuple[DesktopClient | None, int]:
        """
        C{user}'s desktop client (none with C{rc=""}) and phone: the client
        logs in, the phone registers through the gateway, and the gateway
        logs in for the user. Return the client and the phone's port.
        """
        client = await self.startClient(user, "psi" if rc == "psi" else "desk", rc,
                                        reconnect=reconnect) if rc else None
        port = self.register(user)
        await self.loggedIn(user)
        return client, port

    # -- assertions ------------------------------------------------------

    async def expectBusy(self, user: str, since: int, text: str = PHONE,
                         resource: str = "psi", priority: int = 5) -> Sighting:
        return await self.watch.expect(f"{jid(user)}/{resource}", since, show="dnd", status=text,
                                       priority=priority)

    async def expectBack(self, user: str, since: int, resource: str = "psi") -> Sighting:
        """
        The watcher sees C{user}'s client with its own status again (and
        that is the last it saw of it).
        """
        full = f"{jid(user)}/{resource}"
        await self.watch.expect(full, since, show=None, status=normalStatus(user), priority=5)
        return await self.watch.expectLatest(full, show=None, status=normalStatus(user),
                                             priority=5)

    def assertGatewayResourceIdle(self, user: str, since: int) -> None:
        """
        In case b the call shows on the user's client, not on the gateway's
        resource: it never went dnd.
        """
        busy = [s for s in self.watch.of(f"{jid(user)}/sipxmpp", since) if s.show == "dnd"]
        self.assertEqual(busy, [], f"{user}'s gateway resource went dnd although a client "
                                   f"offers remote control:\n{describe(busy)}")

    async def outboundCallShown(self, user: str) -> None:
        """
        C{user} (provisioned, phone registered) calls someone outside: the
        client goes dnd during the call (the gateway's resource does not),
        /status says on the phone, and after it all is back.
        """
        outside = self.registerOutside(f"x-{user}")
        uas = self.startPhone("uas", f"x-{user}", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, f"x-{user}", user)
        await self.expectBusy(user, mark)
        self.assertStillRunning(call, f"{user} was seen on the phone")
        await self.expectTelephony(user, "on-the-phone")
        await self.finished(f"{user}'s call", call)
        await self.finished(f"x-{user}'s phone", uas)
        await self.expectBack(user, mark)
        await self.expectTelephony(user, "online")
        self.assertGatewayResourceIdle(user, mark)

    def assertStillRunning(self, call: SippProcess, what: str) -> None:
        if not call.running:
            self.fail(f"the call had already ended when {what}: {call.wait(1).describe()}")


class EndToEndTests(E2ETestCase):
    """
    One Prosody, Kamailio and gateway for the class.
    """

    shared = SharedServer(lambda: Stack(provision=[
        u for u in USERS if u not in ("watcher", "peggy", "quinn", "rita", "sam")]))

    @deferred
    async def test_outboundCall(self) -> None:
        """
        Case b for the caller: alice's Psi-style client is set to dnd "I am
        currently on the phone" (its priority kept) while she calls someone
        outside, and gets her own status back after the call.
        """
        await self.provisionedPhone("alice")
        await self.outboundCallShown("alice")

    @deferred
    async def test_inboundCall(self) -> None:
        """
        Case b for the callee: someone outside calls bob through Kamailio,
        which follows bob's Path to the gateway; bob's client shows dnd
        during the call and his own status after it.
        """
        _, port = await self.provisionedPhone("bob")
        uas = self.startPhone("uas", "bob", port)
        mark = self.watch.mark()
        call = self.startCall("uac", self.stack.registrar, "bob", "x-bob")
        await self.expectBusy("bob", mark)
        self.assertStillRunning(call, "bob was seen on the phone")
        await self.finished("the call to bob", call)
        await self.finished("bob's phone", uas)
        await self.expectBack("bob", mark)
        await self.expectTelephony("bob", "online")
        self.assertGatewayResourceIdle("bob", mark)

    @deferred
    async def test_callBetweenProvisionedUsers(self) -> None:
        """
        carol calls dave, both behind the gateway: the call spirals through
        it twice, and both clients go dnd, then back.
        """
        await self.provisionedPhone("carol")
        _, davePort = await self.provisionedPhone("dave")
        uas = self.startPhone("uas", "dave", davePort)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "dave", "carol")
        await self.expectBusy("carol", mark)
        await self.expectBusy("dave", mark)
        self.assertStillRunning(call, "both were seen on the phone")
        await self.expectTelephony("carol", "on-the-phone")
        await self.expectTelephony("dave", "on-the-phone")
        await self.finished("carol's call", call)
        await self.finished("dave's phone", uas)
        await self.expectBack("carol", mark)
        await self.expectBack("dave", mark)
        for user in ("carol", "dave"):
            await self.expectTelephony(user, "online")
            self.assertGatewayResourceIdle(user, mark)

    @deferred
    async def test_busy(self) -> None:
        """
        erin calls frank, whose phone rings and then answers 486 Busy Here:
        frank's client shows the ringing text while it rings, erin's shows
        her dialling; neither stays dnd after the call failed.
        """
        await self.provisionedPhone("erin")
        _, frankPort = await self.provisionedPhone("frank")
        uas = self.startPhone("e2e_uas_busy_ringing", "frank", frankPort, pauseMs=1500)
        mark = self.watch.mark()
        call = self.startCall("uac_busy", self.gateway.address, "frank", "erin")
        await self.expectBusy("frank", mark, RINGING)
        await self.expectBusy("erin", mark)
        await self.finished("erin's call (486 expected)", call)
        await self.finished("frank's phone", uas)
        await self.expectBack("erin", mark)
        await self.expectBack("frank", mark)
        await self.expectTelephony("erin", "online")
        await self.expectTelephony("frank", "online")

    @deferred
    async def test_cancel(self) -> None:
        """
        grace calls heidi and hangs up while it rings: heidi's client shows
        the ringing text meanwhile; after the CANCEL both are back.
        """
        await self.provisionedPhone("grace")
        _, heidiPort = await self.provisionedPhone("heidi")
        uas = self.startPhone("e2e_uas_cancel", "heidi", heidiPort)
        mark = self.watch.mark()
        call = self.startCall("e2e_uac_cancel", self.gateway.address, "heidi", "grace",
                              pauseMs=1500)
        await self.expectBusy("heidi", mark, RINGING)
        await self.expectTelephony("heidi", "ringing")
        await self.finished("grace's cancelled call", call)
        await self.finished("heidi's phone", uas)
        await self.expectBack("grace", mark)
        await self.expectBack("heidi", mark)
        await self.expectTelephony("grace", "online")
        await self.expectTelephony("heidi", "online")
        # heidi's phone only rang: she was never "on the phone".
        self.assertNotIn(("dnd", PHONE), statuses(self.watch.of(f"{jid('heidi')}/psi", mark)))

    @deferred
    async def test_holdAndResume(self) -> None:
        """
        ivan calls judy, puts the call on hold and resumes it: both clients
        show the call, then the hold text, then the call again, and their
        own status once it is over.
        """
        await self.provisionedPhone("ivan")
        _, judyPort = await self.provisionedPhone("judy")
        uas = self.startPhone("e2e_uas_hold", "judy", judyPort)
        mark = self.watch.mark()
        call = self.startCall("e2e_uac_hold", self.gateway.address, "judy", "ivan",
                              pauseMs=2000)
        for user in ("ivan", "judy"):
            await self.expectBusy(user, mark)
        hold = self.watch.mark()
        for user in ("ivan", "judy"):
            await self.expectBusy(user, hold, HOLD)
            await self.expectTelephony(user, "on-hold")
        resumed = self.watch.mark()
        for user in ("ivan", "judy"):
            await self.expectBusy(user, resumed, PHONE)
        self.assertStillRunning(call, "the call was seen resumed")
        await self.finished("ivan's call", call)
        await self.finished("judy's phone", uas)
        for user in ("ivan", "judy"):
            await self.expectBack(user, mark)
            seen = statuses(self.watch.of(f"{jid(user)}/psi", mark))
            self.assertEqual([s for s in seen if s[1] != RINGING],
                             [("dnd", PHONE), ("dnd", HOLD), ("dnd", PHONE),
                              ("", normalStatus(user))], seen)

    @deferred
    async def test_twoDevicesParallelCalls(self) -> None:
        """
        kim has two phones, each in a call: her client stays dnd until the
        last call is over. The longer call is put on hold after the short
        one ended, so the watcher sees the hold text as the next change: a
        status restored in between (at the end of the short call) would
        show up before it.
        """
        await self.provisionedPhone("kim")
        second = self.register("kim")
        short, long = self.registerOutside("x-kim1"), self.registerOutside("x-kim2")
        uasShort = self.startPhone("uas", "x-kim1", short)
        uasLong = self.startPhone("e2e_uas_hold", "x-kim2", long)
        mark = self.watch.mark()
        # Each phase of the long call lasts 3 s: up, on hold, resumed.
        callLong = self.startCall("e2e_uac_hold", self.gateway.address, "x-kim2", "kim",
                                  localPort=second, pauseMs=3000)
        await self.expectBusy("kim", mark)
        callShort = self.startCall("uac", self.gateway.address, "x-kim1", "kim", pauseMs=300)
        await self.finished("kim's short call", callShort)
        await self.finished("x-kim1's phone", uasShort)
        shortOver = self.watch.mark()
        self.assertStillRunning(callLong, "the short call ended")
        await self.expectBusy("kim", mark, HOLD)
        self.assertEqual(statuses(self.watch.of(f"{jid('kim')}/psi", mark)),
                         [("dnd", PHONE), ("dnd", HOLD)],
                         "kim's client did not stay dnd from the first call to the hold")
        self.assertEqual(await self.expectStatus("kim", "telephony", lambda v: True, "any"),
                         "on-hold")
        await self.finished("kim's long call", callLong)
        await self.finished("x-kim2's phone", uasLong)
        await self.expectBack("kim", shortOver)
        await self.expectTelephony("kim", "online")

    @deferred
    async def test_badCredentials(self) -> None:
        """
        mallory's account has a wrong XMPP password: her session fails with
        the reason in /status, while her calls still go through the gateway
        and nina, whom she calls, is shown on the phone and back as usual.
        """
        await self.startClient("nina", "psi")
        malloryPort = self.register("mallory")
        ninaPort = self.register("nina")
        failed = await self.expectStatus("mallory", "xmpp",
                                         lambda v: v.startswith("failed"), "failed")
        self.assertTrue(failed.startswith("failed: authentication"), failed)
        await self.loggedIn("nina")
        uas = self.startPhone("uas", "nina", ninaPort)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "nina", "mallory",
                              localPort=malloryPort)
        await self.expectBusy("nina", mark)
        await self.expectTelephony("mallory", "on-the-phone")
        await self.finished("mallory's call", call)
        await self.finished("nina's phone", uas)
        await self.expectBack("nina", mark)
        self.assertTrue(self.userStatus("mallory")["xmpp"].startswith("failed: authentication"),
                        self.userStatus("mallory"))
        self.assertEqual(self.userStatus("nina")["xmpp"], READY)
        # Nothing was ever shown for mallory (Prosody answers the watcher's
        # presence probe with her bare JID unavailable; nothing else).
        self.assertEqual([s for s in self.watch.sightings
                          if s.jid.startswith("mallory@") and s.available], [])

    @deferred
    async def test_clientWithoutRemoteControl(self) -> None:
        """
        Case a: oscar's only client offers no remote control, so the
        gateway's own resource shows dnd with the text at a priority above
        his client's during the call, and goes back below zero after; his
        client is left alone.
        """
        await self.startClient("oscar", "desk", rc="none", priority=2)
        port = self.register("oscar")
        await self.loggedIn("oscar")
        outside = self.registerOutside("x-oscar")
        uas = self.startPhone("uas", "x-oscar", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-oscar", "oscar", localPort=port)
        busy = await self.watch.expect(f"{jid('oscar')}/sipxmpp", mark, show="dnd", status=PHONE)
        self.assertGreater(busy.priority, 2)
        self.assertStillRunning(call, "oscar was seen on the phone")
        await self.finished("oscar's call", call)
        await self.finished("x-oscar's phone", uas)
        await self.watch.expectLatest(f"{jid('oscar')}/sipxmpp", show=None, status=None,
                                      priority=-1)
        self.assertEqual(self.watch.of(f"{jid('oscar')}/desk", mark), [])


class ProsodyRestartTests(E2ETestCase):
    """
    Prosody restarts during a call.
    """

    shared = SharedServer(lambda: Stack(provision=["peggy", "quinn", "sam"]))

    @deferred
    async def test_prosodyRestartedMidCall(self) -> None:
        """
        peggy (a Psi-style client that logs in again after a server restart,
        with the status it had) calls quinn (no client: case a). Prosody
        restarts during the call: the SIP call is not disturbed, the
        gateway's sessions come back and show the call again, and after
        the call both are back to normal.
        """
        await self.provisionedPhone("peggy", reconnect=0.3)
        _, quinnPort = await self.provisionedPhone("quinn", rc="")
        uas = self.startPhone("uas", "quinn", quinnPort)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "quinn", "peggy", pauseMs=9000)
        await self.expectBusy("peggy", mark)
        await self.watch.expect(f"{jid('quinn')}/sipxmpp", mark, show="dnd", status=PHONE)

        self.watch.stop()
        self.stack.prosody.stop()
        self.stack.prosody.start()
        self.watch = Watch(self, self.stack)
        self.addCleanup(self.watch.stop)
        for user in ("peggy", "quinn"):
            await self.expectStatus(user, "xmpp", lambda v: v == READY, "logged in again")
        # Converged during the call: peggy's client came back at dnd, and
        # the gateway's resource shows quinn's call again.
        await self.expectBusy("peggy", 0)
        await self.watch.expect(f"{jid('quinn')}/sipxmpp", show="dnd", status=PHONE)
        self.assertStillRunning(call, "the restarted Prosody showed the call again")

        await self.finished("peggy's call across the Prosody restart", call)
        await self.finished("quinn's phone", uas)
        await self.expectBack("peggy", 0)
        await self.watch.expectLatest(f"{jid('quinn')}/sipxmpp", show=None, status=None,
                                      priority=-1)


    @deferred
    async def test_callEndsWhileProsodyIsDown(self) -> None:
        """
        sam's call ends while Prosody is down (SIP never waits on XMPP: the
        call completes). When Prosody is back, the gateway logs in again
        first and sam's Psi-style client a few seconds later, still at the
        dnd set for the call: the gateway must still put its status back.
        """
        await self.provisionedPhone("sam", reconnect=4.0)
        outside = self.registerOutside("x-sam")
        uas = self.startPhone("uas", "x-sam", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-sam", "sam", pauseMs=1500)
        await self.expectBusy("sam", mark)

        self.watch.stop()
        self.stack.prosody.stop()
        await self.finished("sam's call while Prosody is down", call)
        await self.finished("x-sam's phone", uas)
        await self.expectTelephony("sam", "online")
        self.stack.prosody.start()
        self.watch = Watch(self, self.stack)
        self.addCleanup(self.watch.stop)
        await self.expectStatus("sam", "xmpp", lambda v: v == READY, "logged in again")
        await self.expectBack("sam", 0)


class GatewayRestartTests(E2ETestCase):
    """
    The gateway itself restarts during a call.
    """

    shared = SharedServer(lambda: Stack(provision=["rita"]))

    @deferred
    async def test_gatewayRestartedMidCall(self) -> None:
        """
        rita is on the phone, her client at dnd by remote control, when the
        gateway stops; it starts again with the same store during the call,
        restores her call, and when the call ends her client gets its saved
        status back.
        """
        await self.provisionedPhone("rita")
        outside = self.registerOutside("x-rita")
        uas = self.startPhone("uas", "x-rita", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-rita", "rita", pauseMs=8000)
        await self.expectBusy("rita", mark)

        self.gateway.stop()
        await self.watch.expect(f"{jid('rita')}/sipxmpp", mark, available=False)
        restarted = self.watch.mark()
        self.gateway.start()
        await self.expectTelephony("rita", "on-the-phone")
        await self.expectStatus("rita", "xmpp", lambda v: v == READY, "logged in again")
        self.assertStillRunning(call, "the restarted gateway had restored the call")
        # Still dnd: the restarted gateway did not undo the call early.
        self.assertEqual(self.watch.of(f"{jid('rita')}/psi", restarted), [])

        await self.finished("rita's call across the gateway restart", call)
        await self.finished("x-rita's phone", uas)
        await self.expectBack("rita", restarted)
        await self.expectTelephony("rita", "online")


class GatewayKilledTests(E2ETestCase):
    """
    The gateway crashes (SIGKILL) during a call: what it had written to the
    store is all there is.
    """

    shared = SharedServer(lambda: Stack(provision=["kim"]))

    @deferred
    async def test_gatewayKilledMidCall(self) -> None:
        """
        kim is on the phone, her client at dnd by remote control, when the
        gateway is killed; started again with the same store, it restores
        her call from what it had saved, and when the call ends her client
        gets its saved status back: nothing stays stuck.
        """
        await self.provisionedPhone("kim")
        outside = self.registerOutside("x-kim")
        uas = self.startPhone("uas", "x-kim", outside)
        mark = self.watch.mark()
        call = self.startCall("uac", self.gateway.address, "x-kim", "kim", pauseMs=9000)
        await self.expectBusy("kim", mark)

        # Kill only once the call and the client's saved status are written
        # (the store is written at most every half second).
        deadline = time.monotonic() + WAIT
        while True:
            reports = [r for r in self.gateway.savedState() if r.get("aor") == aor("kim")]
            saved = reports[0] if reports else {}
            if saved.get("dialogs") and saved.get("saved_statuses"):
                break
            if time.monotonic() > deadline:
                self.fail(f"the call and saved status of kim never reached the store: {reports}")
            await sleep(0.1)
        self.gateway.kill()
        await self.watch.expect(f"{jid('kim')}/sipxmpp", mark, available=False)
        restarted = self.watch.mark()
        self.gateway.start()
        await self.expectTelephony("kim", "on-the-phone")
        self.assertStillRunning(call, "the restarted gateway had restored the call")
        self.assertEqual(self.watch.of(f"{jid('kim')}/psi", restarted), [])

        await self.finished("kim's call across the crash", call)
        await self.finished("x-kim's phone", uas)
        await self.expectBack("kim", restarted)
        await self.expectTelephony("kim", "online")
