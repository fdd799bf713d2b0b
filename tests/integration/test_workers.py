"""
The gateway with C{[sip] workers = 2} in front of a real Kamailio, driven
by sipp phones (issue 20): each worker's own port in the Path Kamailio
stores and in the Via and Record-Route, so that inbound calls, responses,
CANCEL and in-dialog requests reach the worker that holds the transaction
or the phone's flow; one state for a user whatever worker saw the phone;
a killed worker restarted while the other's calls go on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeSIPPortRange, freeTCPPort
from sipxmpp.testing.process import SharedServer, requireBinaries
from sipxmpp.testing.sipp import SippRunner
from tests.integration import test_e2e as e2e
from tests.integration.test_proxy import (
    DOMAIN,
    ProxyTestCase,
    Registrar,
    aor,
    expectState,
    metricValue,
    received,
    sentBy,
)
from tests.integration.test_restart_routing import savedRoutes

WORKERS = 2


class WorkersStack:
    """
    Kamailio and a gateway with two SIP workers in front of it.
    """

    def __init__(self) -> None:
        self.registrar = Registrar()
        self.gateway: GatewayServer | None = None
        self.workerPorts = 0

    @property
    def running(self) -> bool:
        return self.registrar.running and self.gateway is not None and self.gateway.running

    def start(self) -> None:
        self.registrar.start()
        self.workerPorts = freeSIPPortRange(WORKERS)
        self.gateway = GatewayServer(upstreamPort=self.registrar.port, settings={
            ("sip", "workers"): str(WORKERS),
            ("sip", "worker_ports"): str(self.workerPorts),
        })
        self.gateway.start()

    def stop(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            self.registrar.stop()


def workers(gateway: GatewayServer) -> list[dict[str, Any]]:
    """
    The workers as C{/status} lists them.
    """
    sip = gateway.status()["sip"]
    assert isinstance(sip, dict)
    result: list[dict[str, Any]] = sip["workers"]
    return result


def allConnected(gateway: GatewayServer) -> bool:
    return all(w["connected"] for w in workers(gateway))


class WorkersTests(ProxyTestCase):
    shared = SharedServer(WorkersStack)

    def setUp(self) -> None:
        super().setUp()
        self.ports = [self.stack.workerPorts + i for i in range(WORKERS)]  # type: ignore[attr-defined]
        waitFor("both workers connected", lambda: allConnected(self.gateway), timeout=20)

    def workerOf(self, user: str) -> int:
        """
        The worker whose port is in the Path Kamailio stored for C{user}.
        """
        [stored] = self.registrar.contacts(user)
        for index, port in enumerate(self.ports):
            if stored["Path"] == f"<sip:{LOOPBACK}:{port};lr>":
                return index
        raise AssertionError(f"Path {stored['Path']} names no worker")

    def phoneOnEachWorker(self, prefix: str) -> dict[int, tuple[str, int]]:
        """
        Register phones C{prefix}0, C{prefix}1, ... from new ports until
        each worker holds one (the kernel hashes each source to a worker);
        worker index -> (user, port).
        """
        found: dict[int, tuple[str, int]] = {}
        for n in range(40):
            user = f"{prefix}{n}"
            port = self.registerThroughGateway(user)
            found.setdefault(self.workerOf(user), (user, port))
            if len(found) == WORKERS:
                return found
        raise AssertionError(f"40 phones all on workers {sorted(found)}")

    def test_pathNamesTheWorker(self) -> None:
        """
        Phones land on both workers; each REGISTER reaches Kamailio with its
        worker's own port in the Path, and the user is online.
        """
        phones = self.phoneOnEachWorker("pa")
        for user, _ in phones.values():
            expectState(self.gateway, user, "online")
        self.assertEqual(metricValue(self.gateway, "sipxmpp_sip_bindings"),
                         float(sum(w["bindings"] or 0 for w in workers(self.gateway))))

    def test_inboundCallToEachWorker(self) -> None:
        """
        A call from outside to a phone on each worker: Kamailio follows the
        Path to that worker, which has the phone's flow; the INVITE the
        phone gets names the worker's port in the Via and the public port
        in the Record-Route it will use; the caller's BYE arrives too.
        """
        gw = self.gateway
        for index, (user, port) in self.phoneOnEachWorker("in").items():
            uas = self.sipp.answer(user, localPort=port, traceMessages=True)
            call = self.sipp.start("uac", self.registrar.address, service=user,
                                   keys={"domain": DOMAIN, "caller": f"outside-{user}"},
                                   extraArgs=["-d", "1000"], waitBound=False)
            expectState(gw, user, "on-the-phone")
            self.assertSucceeded(call.wait())
            answered = uas.wait()
            self.assertSucceeded(answered)
            expectState(gw, user, "online")
            [invite] = received(answered, "INVITE ")
            self.assertEqual(sentBy(invite.values("Via")[0]), f"{LOOPBACK}:{self.ports[index]}")
            rr = invite.values("Record-Route")
            self.assertEqual(rr[:2], [f"<sip:{gw.address};lr>",
                                      f"<sip:{LOOPBACK}:{self.ports[index]};lr>"])
            self.assertEqual(len(received(answered, "BYE ")), 1)

    def test_callsBetweenUsersOnBothWorkers(self) -> None:
        """
        A phone on each worker calls the other (the INVITE spirals through
        both workers): both users are on the phone, then online.
        """
        gw = self.gateway
        phones = self.phoneOnEachWorker("sp")
        (caller, callerPort), (callee, calleePort) = phones[0], phones[1]
        uas = self.sipp.answer(callee, localPort=calleePort)
        call = self.sipp.start("uac", gw.address, service=callee, localPort=callerPort,
                               keys={"domain": DOMAIN, "caller": caller},
                               extraArgs=["-d", "1500"], waitBound=False)
        expectState(gw, callee, "on-the-phone")
        expectState(gw, caller, "on-the-phone")
        self.assertSucceeded(call.wait())
        self.assertSucceeded(uas.wait())
        expectState(gw, callee, "online")
        expectState(gw, caller, "online")

    def test_cancelOnEachWorker(self) -> None:
        """
        An outside caller cancels while a phone on each worker rings: the
        CANCEL reaches the worker holding the INVITE (the phone gets it,
        answers 487) and the user is online again.
        """
        gw = self.gateway
        for user, port in self.phoneOnEachWorker("ca").values():
            uas = self.sipp.start("proxy_uas_cancel", service=user, localPort=port,
                                  traceMessages=True)
            call = self.sipp.start("proxy_uac_cancel", gw.address, service=user,
                                   keys={"domain": DOMAIN, "caller": f"x-{user}"},
                                   waitBound=False)
            expectState(gw, user, "ringing")
            self.assertSucceeded(call.wait())
            answered = uas.wait()
            self.assertSucceeded(answered)
            self.assertEqual(len(received(answered, "CANCEL ")), 1)
            expectState(gw, user, "online")

    def test_retransmissionAbsorbed(self) -> None:
        """
        A request sent three times from one address (UDP retransmissions)
        is forwarded once: each copy reached the worker holding its
        transaction.
        """
        gw = self.gateway
        user, port = self.phoneOnEachWorker("rt")[1]
        before = metricValue(gw, 'sipxmpp_sip_requests_forwarded_total{method="OPTIONS"}')
        request = (
            f"OPTIONS sip:nobody@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-rt-{os.getpid()}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=rt1\r\n"
            f"To: <sip:nobody@{DOMAIN}>\r\n"
            f"Call-ID: rt-{os.getpid()}-{time.monotonic()}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, port))
            sock.settimeout(5)
            codes = []
            for _ in range(3):
                sock.sendto(request, (LOOPBACK, gw.sipPort))
                codes.append(sock.recv(65535).split(b" ", 2)[1])
        self.assertEqual(len(codes), 3)
        waitFor("the forwarded count reported", lambda: metricValue(
            gw, 'sipxmpp_sip_requests_forwarded_total{method="OPTIONS"}') > before)
        time.sleep(1.5)  # past a report interval: a second copy would show by now
        self.assertEqual(metricValue(
            gw, 'sipxmpp_sip_requests_forwarded_total{method="OPTIONS"}'), before + 1)

    def test_killedWorkerRestarted(self) -> None:
        """
        kill -9 one worker during answered calls on both: the main process
        starts it again and gives it the routes to the phones; both calls
        complete (the far end's BYE reaches the phone through the restarted
        worker), nobody stays on the phone, and a new call to the killed
        worker's phone works without registering again.
        """
        gw = self.gateway
        phones = self.phoneOnEachWorker("kill")
        calls = []
        for user, port in phones.values():
            uas = self.sipp.answer(user, localPort=port)
            call = self.sipp.start("uac", self.registrar.address, service=user,
                                   keys={"domain": DOMAIN, "caller": f"k-{user}"},
                                   extraArgs=["-d", "4000"], waitBound=False)
            calls.append((user, uas, call))
        for user, _, _ in calls:
            expectState(gw, user, "on-the-phone")
        before = {w["index"]: w for w in workers(gw)}
        restarts = metricValue(gw, "sipxmpp_workers_restarts_total")
        os.kill(before[0]["pid"], signal.SIGKILL)
        waitFor("worker 0 restarted", lambda: [
            w for w in workers(gw) if w["index"] == 0 and w["connected"]
            and w["pid"] != before[0]["pid"]], timeout=20)
        for user, uas, call in calls:
            self.assertSucceeded(call.wait(40))
            self.assertSucceeded(uas.wait(40))
            expectState(gw, user, "online", timeout=15)
        self.assertEqual(metricValue(gw, "sipxmpp_workers_restarts_total"), restarts + 1)
        user, port = phones[0]
        uas = self.sipp.answer(user, localPort=port)
        call = self.sipp.start("uac", self.registrar.address, service=user,
                               keys={"domain": DOMAIN, "caller": f"k2-{user}"},
                               extraArgs=["-d", "500"], waitBound=False)
        self.assertSucceeded(call.wait())
        self.assertSucceeded(uas.wait())
        expectState(gw, user, "online")

    def test_killUnderLoad(self) -> None:
        """
        kill -9 of worker 0 while worker 1 carries calls at 15/s (calls
        from Kamailio to a phone on worker 1, routed there by its Path) and
        worker 0 holds an answered call: every call of worker 1's completes,
        the held call completes too (its BYE comes once worker 0 is back: a
        request sent while it is down is lost with it), and nobody stays on
        the phone.
        """
        gw = self.gateway
        heldUser, heldPort = self.phoneOnEachWorker("kh")[0]
        loadUser, loadPort = self.phoneOnEachWorker("kl")[1]
        heldUAS = self.sipp.answer(heldUser, localPort=heldPort)
        held = self.sipp.start("uac", self.registrar.address, service=heldUser,
                               keys={"domain": DOMAIN, "caller": f"h-{heldUser}"},
                               extraArgs=["-d", "12000"], waitBound=False)
        # Kamailio's two workers may let a BYE overtake its ACK: this UAS
        # takes that.
        loadUAS = self.sipp.start("proxy_bench_ramp_uas", service=loadUser,
                                  localPort=loadPort, calls=10**6, timeout=120)
        calls = 150
        load = self.sipp.start("uac", self.registrar.address, service=loadUser,
                               keys={"domain": DOMAIN, "caller": f"l-{loadUser}"},
                               calls=calls, timeout=90, waitBound=False,
                               extraArgs=["-r", "15", "-d", "0"])
        expectState(gw, heldUser, "on-the-phone")
        time.sleep(2)  # the load is running
        before = {w["index"]: w for w in workers(gw)}
        os.kill(before[0]["pid"], signal.SIGKILL)
        waitFor("worker 0 restarted", lambda: [
            w for w in workers(gw) if w["index"] == 0 and w["connected"]
            and w["pid"] != before[0]["pid"]], timeout=20)
        self.assertTrue(held.running, "the held call ended before worker 0 was back")
        made = load.wait(90)
        self.assertEqual((made.successful, made.failed), (calls, 0), made.describe())
        self.assertSucceeded(held.wait(40))
        self.assertSucceeded(heldUAS.wait(40))
        loadUAS.stop()
        expectState(gw, heldUser, "online", timeout=15)
        expectState(gw, loadUser, "online", timeout=15)

    def test_routesSurviveGatewayKill(self) -> None:
        """
        The main process saves every worker's routes to the phones: after
        a kill -9 of the whole gateway and a start, a call to a phone on
        each worker arrives without the phones registering again.
        """
        gw = self.gateway
        phones = self.phoneOnEachWorker("rs")
        for user, _ in phones.values():
            waitFor(f"{user}'s route saved", lambda user=user: any(
                a == aor(user) for k, a, _ in savedRoutes(gw) if k == "registration"))
        address = gw.address
        gw.kill()
        gw.start()
        self.assertEqual(gw.address, address)
        waitFor("both workers connected", lambda: allConnected(gw), timeout=20)
        for user, port in phones.values():
            uas = self.sipp.answer(user, localPort=port)
            call = self.sipp.start("uac", self.registrar.address, service=user,
                                   keys={"domain": DOMAIN, "caller": f"r-{user}"},
                                   extraArgs=["-d", "500"], waitBound=False)
            self.assertSucceeded(call.wait())
            self.assertSucceeded(uas.wait())
            expectState(gw, user, "online")

    def test_oneMetricsAndHealth(self) -> None:
        """
        One /metrics and /healthz for the gateway: the workers' counters
        add up there, and the health has the workers and upstream checks.
        """
        gw = self.gateway
        self.phoneOnEachWorker("me")
        self.assertEqual(metricValue(gw, "sipxmpp_workers_connected"), float(WORKERS))
        waitFor("REGISTERs counted", lambda: metricValue(
            gw, 'sipxmpp_sip_requests_forwarded_total{method="REGISTER"}') >= 2)
        with urllib.request.urlopen(f"http://{LOOPBACK}:{gw.httpPort}/healthz/ready",
                                    timeout=5) as response:
            checks = json.load(response)
        # 200: every check passed, the workers' and the upstream keepalive
        # (each worker probes Kamailio and reports it) among them.
        self.assertIn("workers", json.dumps(checks))
        self.assertIn("upstream", json.dumps(checks))
        self.assertIn("answered", json.dumps(checks))


class WorkersEndToEndTests(e2e.E2ETestCase):
    """
    With SIP in two workers, the users' XMPP presence still follows their
    calls (Prosody, the users' XEP-0146 clients, a watching contact): the
    client turns dnd during the call and back after it.
    """

    shared = SharedServer(lambda: e2e.Stack(provision=["alice", "bob"], gatewaySettings={
        ("sip", "workers"): str(WORKERS),
        ("sip", "worker_ports"): str(freeSIPPortRange(WORKERS)),
    }))

    test_outboundCall = e2e.EndToEndTests.test_outboundCall
    test_inboundCall = e2e.EndToEndTests.test_inboundCall

    def test_sipInWorkers(self) -> None:
        """
        This gateway runs SIP in its workers (so the tests above ran so).
        """
        self.assertEqual(len(workers(self.gateway)), WORKERS)


STORM_USERS = 400
STORM_ITERATIONS = 4096


def scramKeys(user: str, password: str) -> tuple[str, bytes, bytes]:
    """
    C{user}'s salt, StoredKey and ServerKey (RFC 5802), as Prosody keeps
    them: accounts written straight to its files, not one prosodyctl each.
    """
    salt = hashlib.sha1(f"salt-{user}".encode()).hexdigest()[:16]
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), STORM_ITERATIONS)
    clientKey = hmac.new(salted, b"Client Key", "sha1").digest()
    return salt, hashlib.sha1(clientKey).digest(), hmac.new(salted, b"Server Key", "sha1").digest()


class XMPPStormTests(SynchronousTestCase):
    """
    Issue 20: with SIP in workers, an XMPP storm costs no call. Calls run
    through the gateway the whole time while it logs 400 users in
    to Prosody at once, and again when Prosody restarts and every session
    reconnects: not one call fails.
    """

    def setUp(self) -> None:
        from sipxmpp.testing.prosody import ProsodyServer

        requireBinaries("kamailio", "sipp", "prosody")
        self.users = [f"u-{n}" for n in range(1, STORM_USERS + 1)]
        self.prosody = ProsodyServer(port=freeTCPPort(), baseDir=self.mktemp())
        self.prosody.prepare()
        for user in self.users:
            salt, stored, server = scramKeys(user, f"{user}-pw")
            self.prosody.writeAccount(user, salt, STORM_ITERATIONS, stored, server)
        self.prosody.start()
        self.addCleanup(self.prosody.stop)
        self.kamailio = Registrar()
        self.kamailio.start()
        self.addCleanup(self.kamailio.stop)
        self.gateway = GatewayServer(
            upstreamPort=self.kamailio.port,
            xmppServer=f"{self.prosody.host}:{self.prosody.port}",
            caFile=self.prosody.caFile,
            settings={("log", "level"): "info", ("sip", "workers"): str(WORKERS),
                      ("sip", "worker_ports"): str(freeSIPPortRange(WORKERS)),
                      ("xmpp", "reconnect_max_delay"): "2"},
        )
        self.gateway.start()
        self.addCleanup(self.gateway.stop)
        accounts = os.path.join(self.gateway.baseDir, "accounts.csv")
        with open(os.open(accounts, os.O_WRONLY | os.O_CREAT, 0o600), "w",
                  encoding="utf-8") as f:  # fmt: skip
            f.write("aor,jid,password\n")
            for user in self.users:
                f.write(f"sip:{user}@{DOMAIN},{user}@{DOMAIN},{user}-pw\n")
        self.gateway.admin("account", "import", accounts)
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)
        waitFor("both workers connected", lambda: allConnected(self.gateway), timeout=20)

    def connected(self) -> float:
        return metricValue(self.gateway, 'sipxmpp_xmpp_sessions{state="connected"}')

    def test_stormCostsNoCall(self) -> None:
        gw = self.gateway
        calleePort = freeSIPPort()
        result = self.sipp.register(self.kamailio.address, "storm-callee", expires=300,
                                    localPort=calleePort)
        self.assertTrue(result.ok, result.describe())
        calls = 1200
        # Kamailio's two workers may let a BYE overtake its ACK: this UAS
        # takes that (the tests' plain uas.xml would count it failed).
        uas = self.sipp.start("proxy_bench_ramp_uas", service="storm-callee",
                              localPort=calleePort, calls=10**8, timeout=300)
        load = self.sipp.start("uac", gw.address, service="storm-callee",
                               keys={"domain": DOMAIN, "caller": "storm-caller"},
                               calls=calls, timeout=180, waitBound=False,
                               extraArgs=["-r", "20", "-d", "0"])
        # The login storm: every user registers at once, so the gateway
        # logs them all in.
        register = self.sipp.start("proxy_bench_register", gw.address, service="u",
                                   keys={"domain": DOMAIN, "expires": 3600},
                                   calls=STORM_USERS, timeout=120, waitBound=False,
                                   extraArgs=["-r", "400"])
        waitFor(f"{STORM_USERS} sessions connected",
                lambda: self.connected() >= STORM_USERS, timeout=120, interval=0.5)
        self.assertTrue(register.wait(60).ok)
        self.assertTrue(load.running, "the calls ended before the reconnect storm")
        # The reconnect storm: Prosody restarts, every session reconnects.
        self.prosody.stop()
        self.prosody.start()
        waitFor(f"{STORM_USERS} sessions connected again",
                lambda: self.connected() >= STORM_USERS, timeout=120, interval=0.5)
        made = load.wait(180)
        self.assertEqual((made.successful, made.failed), (calls, 0), made.describe())
        uas.stop()
