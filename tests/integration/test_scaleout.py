"""
Scale-out (issue 15, item 6): two sipxmpp instances, C{gw-a} and C{gw-b},
share one PostgreSQL store behind a Kamailio dispatcher
(C{etc/kamailio-dispatcher.cfg}) that hashes every PUBLISH on the
Request-URI's user. The telco's Kamailio (C{etc/kamailio-pua.cfg}) proxies
sipp calls between the users and PUBLISHes their dialog state to the
dispatcher. So each user's state and XMPP session live on exactly one
instance; when one instance dies, the dispatcher's OPTIONS probes take it
out and its users' next PUBLISHes go to the other, which logs them in.

Asserted: during calls each user is on the phone on exactly one
instance's C{/status} and unknown to the other, the users are spread over
both, and their clients go dnd; after C{gw-a} is killed (SIGKILL) and the
dispatcher marked it inactive, a call of a user who was on C{gw-a} shows on
C{gw-b} and on the user's client. Everything is on 127.0.0.1; waits are
bounded and nothing asserts on timing (the failover time is printed).

L{ScaleOutKilledMidCallTests} kills gw-a while its users are in calls:
gw-b answers pua's next PUBLISHes 412 and accepts pua's new publications;
the first of these makes gw-b take the user over in the shared store (the
saved statuses of the clients gw-a set dnd move to gw-b's name), log the
user in and put each client's status back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from twisted.internet.threads import deferToThread

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import (
    KamailioDispatcherServer,
    KamailioPuaServer,
    requireModules,
)
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort
from sipxmpp.testing.postgres import PostgresServer, requirePostgres
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.sipp import SippProcess
from tests.integration.test_e2e import (
    DOMAIN,
    PHONE,
    USERS,
    WAIT,
    E2ETestCase,
    aor,
    jid,
)
from tests.integration.test_xmpp_publisher import deferred, sleep

# Three pairs of callers and callees; the names decide the hash.
PAIRS = (("alice", "bob"), ("carol", "dave"), ("erin", "frank"))
PROVISIONED = tuple(user for pair in PAIRS for user in pair)
SCALE_USERS = {user: USERS[user] for user in ("watcher", *PROVISIONED)}
INSTANCES = ("gw-a", "gw-b")
# How long each call stays up (sipp's pause), ms: long enough to see every
# user on the phone on the two gateways.
CALL_MS = 10000
KILLED_CALL_MS = 20000


class ScaleOutStack:
    """
    PostgreSQL, Prosody, the two gateways (one store, one key), the
    dispatcher in front of them and the telco's Kamailio publishing to it.
    """

    def __init__(self) -> None:
        from sipxmpp.testing.prosody import ProsodyServer

        self.baseDir = tempfile.mkdtemp(prefix="sipxmpp-scaleout-")
        # Its own folder: when run as root it belongs to an unprivileged user.
        self.postgres = PostgresServer()
        self.prosody = ProsodyServer(
            users=SCALE_USERS, port=freeTCPPort(), baseDir=os.path.join(self.baseDir, "prosody")
        )
        for user in PROVISIONED:
            self.prosody.subscribe(user, "watcher")
        self.gateways: dict[str, GatewayServer] = {}
        self.dispatcher: KamailioDispatcherServer | None = None
        self.kamailio: KamailioPuaServer | None = None

    @property
    def gateway(self) -> GatewayServer:
        """
        C{gw-a}, for L{E2ETestCase}'s helpers.
        """
        return self.gateways["gw-a"]

    @property
    def running(self) -> bool:
        servers = [self.postgres, self.prosody, *self.gateways.values(), self.dispatcher,
                   self.kamailio]
        return all(server is not None and server.running for server in servers)

    @property
    def registrar(self) -> str:
        assert self.kamailio is not None
        return f"{self.kamailio.host}:{self.kamailio.port}"

    def start(self) -> None:
        self.postgres.start()
        self.prosody.start()
        storeURL = self.postgres.createDatabase("scaleout")
        for name in INSTANCES:
            self.gateways[name] = GatewayServer(
                upstreamPort=0,
                xmppServer=f"{self.prosody.host}:{self.prosody.port}",
                caFile=self.prosody.caFile,
                baseDir=os.path.join(self.baseDir, name),
                settings={
                    ("sip", "upstream"): "",
                    ("ingest", "publishers"): f"{LOOPBACK}/32",
                    ("store", "url"): storeURL,
                    ("store", "instance"): name,
                    ("xmpp", "command_timeout"): "5",
                    ("xmpp", "reconnect_max_delay"): "2",
                },
            )
        first, second = (self.gateways[name] for name in INSTANCES)
        # gw-a initialises the store and makes the key; gw-b gets a copy of
        # the key, so its prepare() finds it and does not initialise again.
        first.prepare()
        key = os.path.join(second.baseDir, "secret.key")
        shutil.copyfile(os.path.join(first.baseDir, "secret.key"), key)
        os.chmod(key, 0o600)  # the gateway refuses a key others can read
        second.prepare()

        # Provisioned once, in the shared store, before the gateways start
        # (they load who is provisioned at start).
        def add(user: str) -> None:
            first.addAccount(aor(user), jid(user), SCALE_USERS[user])

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(add, PROVISIONED))
        for gateway in self.gateways.values():
            gateway.start()
        self.dispatcher = KamailioDispatcherServer(
            [f"sip:{LOOPBACK}:{self.gateways[name].sipPort}" for name in INSTANCES]
        )
        self.dispatcher.start()
        self.kamailio = KamailioPuaServer(publishTo=self.dispatcher.uri)
        self.kamailio.start()

    def stop(self) -> None:
        servers = [self.kamailio, self.dispatcher, *self.gateways.values(), self.prosody,
                   self.postgres]
        try:
            for server in servers:
                if server is not None:
                    try:
                        server.stop()
                    except Exception as e:  # stop the others regardless
                        print(f"stopping {server.name}: {e}")
        finally:
            if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
                shutil.rmtree(self.baseDir, ignore_errors=True)


class ScaleOutTestCase(E2ETestCase):
    """
    Base: the whole scale-out stack for each class's one test (the test
    kills gw-a), with helpers for the two gateways.
    """

    timeout = 300

    def setUp(self) -> None:
        requireModules(*KamailioPuaServer.modules, *KamailioDispatcherServer.modules)
        requireBinaries("kamcmd")
        requirePostgres()
        super().setUp()

    # -- helpers -----------------------------------------------------------

    @property
    def scale(self) -> ScaleOutStack:
        return cast(ScaleOutStack, self.stack)

    def registerAtCore(self, user: str) -> int:
        """
        Register C{user}'s phone at the telco's Kamailio; return its port.
        """
        port = freeSIPPort()
        result = self.sipp.register(self.stack.registrar, user, DOMAIN, expires=300,
                                    localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    async def savedBy(self, name: str, users: list[str]) -> None:
        """
        Wait until the store holds a saved client status of each of
        C{users} written by the gateway C{name}.
        """
        wanted = {aor(user) for user in users}
        deadline = time.monotonic() + WAIT
        while True:
            reports = await deferToThread(self.scale.gateways[name].savedState)
            saved = {r["aor"] for r in reports
                     if r.get("gateway") == name and r.get("saved_statuses")}  # fmt: skip
            if wanted <= saved:
                return
            if time.monotonic() > deadline:
                self.fail(f"saved statuses of {sorted(wanted - saved)} never reached the "
                          f"store from {name}: {reports}")
            await sleep(0.1)

    def entries(self, name: str) -> dict[str, dict[str, str]]:
        """
        C{/status} users of the gateway C{name}.
        """
        users = self.scale.gateways[name].status()["users"]
        assert isinstance(users, dict)
        return users

    def telephonyOn(self, name: str, user: str) -> str:
        entry = self.entries(name).get(aor(user))
        return str(entry["telephony"]) if isinstance(entry, dict) else "unknown"

    async def onThePhoneAt(self, user: str, names: tuple[str, ...]) -> str:
        """
        Wait until one of the gateways C{names} shows C{user} on the phone;
        return its name.
        """
        seen: dict[str, list[str]] = {name: [] for name in names}
        deadline = time.monotonic() + WAIT
        while True:
            for name in names:
                value = self.telephonyOn(name, user)
                if not seen[name] or seen[name][-1] != value:
                    seen[name].append(value)
                if value == "on-the-phone":
                    return name
            if time.monotonic() > deadline:
                self.fail(f"{user} not on the phone on {names} within {WAIT:g} s; seen: {seen}")
            await sleep(0.1)

    def startCalls(self, pairs: tuple[tuple[str, str], ...],
                   pauseMs: int = CALL_MS) -> list[tuple[str, SippProcess]]:  # fmt: skip
        """
        Register each pair's phones at the core and start the calls (the
        first calls the second), each up for C{pauseMs}; return the sipp
        processes.
        """
        processes: list[tuple[str, SippProcess]] = []
        for caller, callee in pairs:
            callerPort = self.registerAtCore(caller)
            calleePort = self.registerAtCore(callee)
            processes.append((f"{callee}'s phone",
                              self.startPhone("pua_uas_ringing", callee, calleePort)))
            processes.append((f"{caller}'s call",
                              self.startCall("uac", self.stack.registrar, callee, caller,
                                             localPort=callerPort, pauseMs=pauseMs)))
        return processes

    async def finishedAll(self, processes: list[tuple[str, SippProcess]]) -> None:
        for what, process in processes:
            await self.finished(what, process)

    def userStatus(self, user: str) -> dict[str, str]:
        """
        C{user}'s C{/status} entry on whichever live gateway knows it (the
        base class reads only one gateway), gw-b first.
        """
        for name in reversed(INSTANCES):
            gateway = self.scale.gateways[name]
            if gateway.process is None:
                continue
            entry = self.entries(name).get(aor(user))
            if isinstance(entry, dict):
                return entry
        return {"telephony": "offline", "xmpp": "absent"}


class ScaleOutTests(ScaleOutTestCase):
    """
    Users hashed over two gateways; one dies between calls.
    """

    shared = SharedServer(ScaleOutStack)

    @deferred
    async def test_hashAndFailover(self) -> None:
        """
        Calls between three pairs: each user is on the phone on exactly one
        gateway (and unknown to the other), both gateways get some users,
        and every user's client goes dnd and back. Then gw-a is killed;
        once the dispatcher has marked it inactive, a call of a user who
        was on gw-a shows on gw-b and on that user's client.
        """
        for user in PROVISIONED:
            await self.startClient(user, "psi")

        # --- the hash: each user on exactly one instance ---
        mark = self.watch.mark()
        calls = self.startCalls(PAIRS)
        for user in PROVISIONED:
            await self.expectBusy(user, mark, PHONE)
        home: dict[str, str] = {}
        for user in PROVISIONED:
            home[user] = await self.onThePhoneAt(user, INSTANCES)
        for caller, _ in PAIRS:
            self.assertStillRunning(next(p for w, p in calls if w == f"{caller}'s call"),
                                    "every user was seen on the phone")
        for user, name in home.items():
            (other,) = (n for n in INSTANCES if n != name)
            self.assertNotIn(aor(user), self.entries(other),
                             f"{user} is on {name} and also known to {other}")
        print(f"\nusers by instance: {home}")
        self.assertEqual(set(home.values()), set(INSTANCES),
                         f"the hash put every user on one instance: {home}")
        await self.finishedAll(calls)
        for user in PROVISIONED:
            await self.expectBack(user, mark)

        # --- failover: gw-a dies, its users move to gw-b ---
        dispatcher = self.scale.dispatcher
        assert dispatcher is not None
        gwA = self.scale.gateways["gw-a"]
        gwAURI = f"sip:{LOOPBACK}:{gwA.sipPort}"
        self.assertTrue(dispatcher.dispatcherStates()[gwAURI].startswith("A"),
                        dispatcher.dispatcherStates())
        moved = next(user for user in PROVISIONED if home[user] == "gw-a")
        pair = next(p for p in PAIRS if moved in p)
        killed = time.monotonic()
        gwA.kill()

        async def inactive() -> float:
            deadline = killed + 30
            while time.monotonic() < deadline:
                states = await deferToThread(dispatcher.dispatcherStates)
                if states.get(gwAURI, "").startswith("I"):
                    return time.monotonic() - killed
                await sleep(0.1)
            self.fail(f"the dispatcher did not mark gw-a inactive within 30 s: {states}")

        took = await inactive()
        print(f"\ngw-a marked inactive {took:.1f} s after SIGKILL "
              f"(dispatcher: {dispatcher.dispatcherStates()})")

        mark = self.watch.mark()
        calls = self.startCalls((pair,))
        await self.expectBusy(moved, mark, PHONE)
        self.assertEqual(await self.onThePhoneAt(moved, ("gw-b",)), "gw-b")
        await self.expectStatus(moved, "xmpp", lambda v: v == "connected", "connected")
        await self.finishedAll(calls)
        await self.expectBack(moved, mark)


class ScaleOutKilledMidCallTests(ScaleOutTestCase):
    """
    gw-a dies while its users are in calls: the calls end on gw-b.
    """

    shared = SharedServer(ScaleOutStack)

    @deferred
    async def test_killedMidCall(self) -> None:
        """
        All three calls are up when gw-a is killed. pua's next PUBLISHes
        for gw-a's users (terminated, SIP-If-Match) reach gw-b, which
        answers 412; pua publishes the same document afresh, which gw-b
        accepts. Each of gw-a's users then gets its own status back.
        """
        for user in PROVISIONED:
            await self.startClient(user, "psi")
        mark = self.watch.mark()
        # Longer calls than the other test's: after the kill they must last
        # until the dispatcher has taken gw-a out (about 3 s), so that the
        # calls' end is published to gw-b.
        calls = self.startCalls(PAIRS, pauseMs=KILLED_CALL_MS)
        for user in PROVISIONED:
            await self.expectBusy(user, mark, PHONE)
        home = {user: await self.onThePhoneAt(user, INSTANCES) for user in PROVISIONED}
        moved = [user for user in PROVISIONED if home[user] == "gw-a"]
        self.assertTrue(moved, home)
        dispatcher = self.scale.dispatcher
        assert dispatcher is not None
        gwA, gwB = self.scale.gateways["gw-a"], self.scale.gateways["gw-b"]
        gwAURI = f"sip:{LOOPBACK}:{gwA.sipPort}"
        # Kill only once gw-a's users' saved client statuses are in the
        # store (written behind, at most every half second): what gw-a had
        # not written, gw-b cannot take over (a run that killed gw-a 0.6 s
        # after a client went dnd left that client dnd).
        await self.savedBy("gw-a", moved)
        for what, call in calls:
            self.assertStillRunning(call, f"gw-a was to be killed ({what})")
        gwA.kill()
        await self.finishedAll(calls)
        self.assertTrue(dispatcher.dispatcherStates()[gwAURI].startswith("I"),
                        dispatcher.dispatcherStates())

        def refused() -> int:
            for line in gwB.metrics().splitlines():
                if line.startswith('sipxmpp_sip_publish_total{code="412",event="dialog"}'):
                    return int(float(line.split()[-1]))
            return 0

        await self.expectStatus(moved[0], "telephony", lambda v: v != "on-the-phone",
                                "off the phone")
        self.assertGreaterEqual(refused(), 1, "gw-b never answered 412")
        for user in moved:
            await self.expectBack(user, mark)
