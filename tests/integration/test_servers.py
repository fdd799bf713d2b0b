"""
The real-server test harness (L{sipxmpp.testing}) against the real servers:
Prosody, ejabberd, Kamailio and sipp on 127.0.0.1, plus the dev stack.

A missing server skips its tests locally and fails them under C{CI=true}.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from sipxmpp.testing.devstack import READY_LINE
from sipxmpp.testing.ejabberd import EjabberdServer
from sipxmpp.testing.kamailio import KamailioServer, sipOptions
from sipxmpp.testing.ports import (
    LOOPBACK,
    LOWEST,
    ephemeralRange,
    freePorts,
    freeSIPPort,
    freeSIPPortRange,
    freeTCPPort,
    freeUDPPort,
    isTCPPortFree,
    isUDPPortFree,
    tcpAccepting,
)
from sipxmpp.testing.process import (
    ServerProcess,
    ServerStartError,
    SharedServer,
    _groupMembers,
    findBinary,
    groupAlive,
    pidAlive,
    requireBinaries,
    runCommand,
    startForTest,
)
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.testing.sipp import SippRunner
from sipxmpp.testing.tls import TestCA, verifyCertificate
from sipxmpp.testing.xmppprobe import XMPPProbe, XMPPProbeError, login

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


def assertStopped(testCase: SynchronousTestCase, pid: int) -> None:
    """
    Assert that process C{pid} and every member of its group are gone.
    """
    testCase.assertFalse(pidAlive(pid), f"process {pid} still runs")
    testCase.assertEqual(_groupMembers(pid), [], f"process group {pid} still has members")


class _Command(ServerProcess):
    """
    A stand-in server: any command, ready when the predicate says so.
    """

    name = "command"

    def __init__(self, args: list[str], ready: bool = True, autoPorts: bool = False) -> None:
        super().__init__(autoPorts=autoPorts)
        self.args = args
        self.ready = ready
        self.seenPids: list[int] = []
        self.portChoices = 0

    def command(self) -> list[str]:
        return self.args

    def isReady(self) -> bool:
        if self.pid is not None:
            self.seenPids.append(self.pid)
        return self.ready

    def choosePorts(self) -> None:
        self.portChoices += 1


class RequireBinariesTests(SynchronousTestCase):
    """
    L{requireBinaries} skips locally and fails under CI.
    """

    def setCI(self, value: str | None) -> None:
        old = os.environ.get("CI")

        def restore() -> None:
            if old is None:
                os.environ.pop("CI", None)
            else:
                os.environ["CI"] = old

        self.addCleanup(restore)
        if value is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = value

    def test_missingSkipsLocally(self) -> None:
        self.setCI(None)
        with self.assertRaises(SkipTest) as caught:
            requireBinaries("sh", "no-such-program-sipxmpp")
        self.assertIn("no-such-program-sipxmpp", str(caught.exception))

    def test_missingFailsUnderCI(self) -> None:
        self.setCI("true")
        with self.assertRaises(FailTest) as caught:
            requireBinaries("no-such-program-sipxmpp")
        self.assertIn("CI=true", str(caught.exception))

    def test_presentPasses(self) -> None:
        self.setCI("true")
        requireBinaries("sh")
        self.assertTrue(os.path.isabs(findBinary("sh")))


class ProcessTests(SynchronousTestCase):
    """
    L{ServerProcess} starts, reports failures with the log, and stops every
    process of the group.
    """

    def test_stopKillsTheWholeGroup(self) -> None:
        server = startForTest(self, _Command(["sh", "-c", "sleep 300 & sleep 300 & wait"]))
        pid = server.pid
        assert pid is not None
        # The shell and both sleeps share the new process group (the shell
        # may still be forking them).
        deadline = time.monotonic() + 10
        while len(_groupMembers(pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(_groupMembers(pid)), 3)
        server.stop()
        assertStopped(self, pid)
        self.assertFalse(server.running)

    def test_stopEscalatesToSIGKILL(self) -> None:
        server = _Command(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
        server.stopTimeout = 0.5
        startForTest(self, server)
        pid = server.pid
        assert pid is not None
        server.stop()
        assertStopped(self, pid)

    def test_exitWhileStartingShowsTheLog(self) -> None:
        server = _Command(
            ["sh", "-c", "echo bad directive in line 7 >&2; exit 3"], ready=False, autoPorts=True
        )
        with self.assertRaises(ServerStartError) as caught:
            server.start()
        message = str(caught.exception)
        self.assertIn("status 3", message)
        self.assertIn("bad directive in line 7", message)
        # Not a port problem: no second attempt with other ports.
        self.assertEqual(server.portChoices, 0)
        server.stop()

    def test_exitWhileStartingRetriesWithNewPorts(self) -> None:
        server = _Command(
            ["sh", "-c", "echo 'bind: Address already in use' >&2; exit 1"],
            ready=False,
            autoPorts=True,
        )
        self.assertRaises(ServerStartError, server.start)
        self.assertEqual(server.portChoices, server.startAttempts - 1)
        server.stop()

    def test_notReadyInTimeIsStopped(self) -> None:
        server = _Command(["sh", "-c", "echo still booting; sleep 300"], ready=False)
        server.startTimeout = 0.5
        with self.assertRaises(ServerStartError) as caught:
            server.start()
        self.assertIn("not ready within", str(caught.exception))
        self.assertIn("still booting", str(caught.exception))
        self.assertTrue(server.seenPids)
        assertStopped(self, server.seenPids[0])
        server.stop()

    def test_fixedPortInUseIsReported(self) -> None:
        with socket.socket() as busy:
            busy.bind((LOOPBACK, 0))
            busy.listen()
            port = busy.getsockname()[1]
            server = _Command(["true"])
            server.listenPorts = lambda: [("tcp", LOOPBACK, port)]  # type: ignore[method-assign]
            with self.assertRaises(ServerStartError) as caught:
                server.start()
            self.assertIn(f"tcp {LOOPBACK}:{port}", str(caught.exception))
            self.assertIsNone(server.pid)
            server.stop()

    def test_sharedServerStopsAfterTheClassLastTest(self) -> None:
        shared = SharedServer(lambda: _Command(["sleep", "300"]))

        class Two(SynchronousTestCase):
            def test_a(self) -> None:
                pass

            def test_b(self) -> None:
                pass

        first = shared.get(Two("test_a"))
        self.addCleanup(first.stop)
        self.assertIs(shared.get(Two("test_b")), first)
        pid = first.pid
        assert pid is not None
        shared._release(Two("test_a"))
        self.assertTrue(first.running)
        shared._release(Two("test_b"))
        assertStopped(self, pid)


class PortTests(SynchronousTestCase):
    """
    Free ports are free.
    """

    def test_freeSIPPortIsFreeForBoth(self) -> None:
        port = freeSIPPort()
        self.assertTrue(isTCPPortFree(port) and isUDPPortFree(port))

    def test_freePortsAreDistinct(self) -> None:
        ports = freePorts(5)
        self.assertEqual(len(set(ports)), 5)

    def test_belowEphemeralRange(self) -> None:
        """
        Ports are drawn below the kernel's ephemeral range, where no
        outgoing connection can take them before the server binds.
        """
        low, _ = ephemeralRange()
        ports = [freeSIPPort(), freeTCPPort(), freeUDPPort(), *freePorts(3)]
        self.assertTrue(all(LOWEST <= p < low for p in ports), ports)
        base = freeSIPPortRange(3)
        self.assertTrue(LOWEST <= base and base + 2 < low, base)

    def test_notHandedOutTwice(self) -> None:
        """
        A caller that asks twice before starting its first server gets two
        numbers, though the first is still free.
        """
        ports = [freeSIPPort() for _ in range(50)]
        self.assertEqual(len(set(ports)), 50)

    def test_ephemeralRangeUnreadable(self) -> None:
        self.assertEqual(ephemeralRange(self.mktemp()), (32768, 60999))


class TLSTests(SynchronousTestCase):
    """
    The test CA issues certificates that verify for their names only.
    """

    def setUp(self) -> None:
        requireBinaries("openssl")

    def test_issuedCertificateVerifies(self) -> None:
        ca = TestCA(self.mktemp())
        cert = ca.issue(["example.test"])
        self.assertTrue(verifyCertificate(cert.certFile, ca.caFile, "example.test"))
        self.assertFalse(verifyCertificate(cert.certFile, ca.caFile, "other.test"))
        other = TestCA(self.mktemp(), "another CA")
        self.assertFalse(verifyCertificate(cert.certFile, other.caFile, "example.test"))

    def test_existingCAIsKept(self) -> None:
        directory = self.mktemp()
        first = TestCA(directory)
        with open(first.caFile) as f:
            pem = f.read()
        with open(TestCA(directory).caFile) as f:
            self.assertEqual(f.read(), pem)


def _prosodyWithFriends() -> ProsodyServer:
    server = ProsodyServer(users=PASSWORDS)
    server.subscribeAll(PASSWORDS)
    return server


class ProsodyTests(SynchronousTestCase):
    """
    One Prosody for the class: users, STARTTLS, certificate, login, roster.
    """

    shared = SharedServer(_prosodyWithFriends)

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl")
        self.server = self.shared.get(self)

    def login(self, user: str, password: str | None = None) -> XMPPProbe:
        s = self.server
        probe = login(s.host, s.port, s.domain, user, password or PASSWORDS[user], s.caFile)
        self.addCleanup(probe.close)
        return probe

    def test_usersExist(self) -> None:
        for user in PASSWORDS:
            self.assertTrue(self.server.userExists(user), user)
        self.assertFalse(self.server.userExists("mallory"))

    def test_registerWhileRunning(self) -> None:
        self.server.register("dave", "dave-secret")
        self.assertTrue(self.server.userExists("dave"))
        self.assertEqual(self.login("dave", "dave-secret").jid, "dave@example.test/probe")

    def test_streamRequiresStartTLS(self) -> None:
        probe = XMPPProbe(self.server.host, self.server.port, self.server.domain)
        self.addCleanup(probe.close)
        self.assertTrue(probe.requiresStartTLS())
        # No authentication at all before TLS (c2s_require_encryption).
        self.assertEqual(probe.mechanisms(), [])
        probe.startTLS(self.server.caFile)
        self.assertIn("SCRAM-SHA-1", probe.mechanisms())

    def test_opensslVerifiesTheChain(self) -> None:
        s = self.server
        result = runCommand(
            [
                findBinary("openssl"),
                "s_client",
                "-connect",
                f"{s.host}:{s.port}",
                "-starttls",
                "xmpp",
                "-xmpphost",
                s.domain,
                "-CAfile",
                s.caFile,
                "-verify_return_error",
                "-verify_hostname",
                s.domain,
            ],
            timeout=15,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("Verify return code: 0 (ok)", result.stdout)

    def test_loginWithSCRAMAndRoster(self) -> None:
        alice = self.login("alice")
        self.assertEqual(alice.jid, "alice@example.test/probe")
        self.assertEqual(
            alice.roster(),
            {"bob@example.test": "both", "carol@example.test": "both"},
        )

    def test_loginWithPLAINOverTLS(self) -> None:
        s = self.server
        probe = login(
            s.host, s.port, s.domain, "carol", PASSWORDS["carol"], s.caFile, mechanism="PLAIN"
        )
        self.addCleanup(probe.close)
        self.assertEqual(probe.jid, "carol@example.test/probe")

    def test_subscriptionIsMutual(self) -> None:
        alice = self.login("alice")
        alice.sendPresence()
        bob = self.login("bob")
        bob.sendPresence()
        # Each sees the other's presence: subscription "both" on both sides.
        self.assertEqual(bob.waitForPresence("alice@example.test").get("from"), alice.jid)
        self.assertEqual(alice.waitForPresence("bob@example.test").get("from"), bob.jid)

    def test_wrongPasswordRefused(self) -> None:
        with self.assertRaises(XMPPProbeError) as caught:
            self.login("alice", "not-the-password")
        self.assertIn("not-authorized", str(caught.exception))


class ProsodyLifecycleTests(SynchronousTestCase):
    """
    Prosody instances of their own: untrusted certificate, stop, failures.
    """

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "openssl")

    def test_untrustedCertificateIsRefused(self) -> None:
        server = startForTest(self, ProsodyServer(untrusted=True))
        probe = XMPPProbe(server.host, server.port, server.domain)
        self.addCleanup(probe.close)
        self.assertRaises(ssl.SSLCertVerificationError, probe.startTLS, server.caFile)
        assert server.certificate is not None
        self.assertFalse(
            verifyCertificate(server.certificate.certFile, server.caFile, server.domain)
        )

    def test_stopLeavesNoProcess(self) -> None:
        server = startForTest(self, ProsodyServer())
        pid = server.pid
        assert pid is not None
        self.assertTrue(pidAlive(pid))
        server.stop()
        assertStopped(self, pid)
        self.assertFalse(tcpAccepting(server.host, server.port))

    def test_brokenConfigurationReportsLog(self) -> None:
        template = os.path.abspath(self.mktemp())
        with open(template, "w") as f:
            f.write('pidfile = "@PID_FILE@"\nthis is not Lua\n')
        server = ProsodyServer(template=template)
        self.addCleanup(server.stop)
        with self.assertRaises(ServerStartError) as caught:
            server.start()
        # Prosody's own complaint is in the message.
        self.assertIn("syntax error near 'is'", str(caught.exception))
        self.assertIsNone(server.pid)


class EjabberdTests(SynchronousTestCase):
    """
    ejabberd starts as root in a temporary folder and speaks XMPP.
    """

    def setUp(self) -> None:
        requireBinaries("erl", "ejabberdctl", "openssl")

    def test_ejabberdServesXMPP(self) -> None:
        server = startForTest(self, EjabberdServer(users={"alice": "a-pw", "bob": "b-pw"}))
        pid = server.pid
        assert pid is not None
        self.assertEqual(sorted(server.registeredUsers()), ["alice", "bob"])
        server.subscribe("alice", "bob")
        self.assertEqual(server.roster("alice"), {"bob@example.test": "both"})

        probe = XMPPProbe(server.host, server.port, server.domain)
        self.addCleanup(probe.close)
        self.assertTrue(probe.requiresStartTLS())
        probe.startTLS(server.caFile)
        self.assertIn("SCRAM-SHA-1", probe.mechanisms())

        alice = login(server.host, server.port, server.domain, "alice", "a-pw", server.caFile)
        self.addCleanup(alice.close)
        self.assertEqual(alice.roster(), {"bob@example.test": "both"})
        alice.sendPresence()
        bob = login(server.host, server.port, server.domain, "bob", "b-pw", server.caFile)
        self.addCleanup(bob.close)
        bob.sendPresence()
        self.assertEqual(bob.waitForPresence("alice@example.test").get("from"), alice.jid)
        self.assertRaises(
            XMPPProbeError,
            login,
            server.host,
            server.port,
            server.domain,
            "alice",
            "wrong",
            server.caFile,
        )

        server.stop()
        # The VM, its port programs and (had it started one) epmd are gone.
        assertStopped(self, pid)
        self.assertFalse(tcpAccepting(server.host, server.port))
        self.assertFalse(tcpAccepting(server.host, server.distPort))


class KamailioTests(SynchronousTestCase):
    """
    One Kamailio for the class; sipp registers and calls through it.
    """

    shared = SharedServer(KamailioServer)

    def setUp(self) -> None:
        requireBinaries("kamailio", "sipp")
        self.server = self.shared.get(self)
        self.target = f"{self.server.host}:{self.server.port}"
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def test_answersOptions(self) -> None:
        self.assertEqual(sipOptions(self.server.host, self.server.port), 200)

    def test_registerAndUnregister(self) -> None:
        result = self.sipp.register(self.target, "reg-user", expires=120)
        self.assertTrue(result.ok, result.describe())
        self.assertEqual((result.successful, result.failed), (1, 0))
        result = self.sipp.unregister(self.target, "reg-user")
        self.assertTrue(result.ok, result.describe())

    def test_callToRegisteredUserCompletes(self) -> None:
        port = freeSIPPort()
        self.assertTrue(self.sipp.register(self.target, "callee", localPort=port).ok)
        uas = self.sipp.answer("callee", localPort=port, traceMessages=True)
        call = self.sipp.call(self.target, "callee", caller="caller", holdMs=50, traceMessages=True)
        self.assertTrue(call.ok, call.describe())
        answered = uas.wait()
        self.assertTrue(answered.ok, answered.describe())
        self.assertEqual((answered.successful, answered.failed), (1, 0))
        # Kamailio stayed in the dialog: Record-Route on the INVITE, and
        # the caller's BYE was routed through it.
        self.assertIn(f"Record-Route: <sip:{self.target};", answered.messages)
        bye = call.messages[call.messages.index("BYE sip:") :]
        self.assertIn(f"Route: <sip:{self.target};", bye)

    def test_busyCallee(self) -> None:
        port = freeSIPPort()
        self.assertTrue(self.sipp.register(self.target, "busy", localPort=port).ok)
        uas = self.sipp.answer("busy", localPort=port, busy=True)
        call = self.sipp.call(self.target, "busy", expectBusy=True)
        self.assertTrue(call.ok, call.describe())
        self.assertTrue(uas.wait().ok)
        # A caller that expects an answer counts the 486 as a failed call.
        uas = self.sipp.answer("busy", localPort=port, busy=True)
        call = self.sipp.call(self.target, "busy")
        self.assertFalse(call.ok)
        self.assertEqual((call.successful, call.failed), (0, 1))
        self.assertIn("486 Busy Here", call.errors)
        uas.wait()

    def test_unregisteredCalleeIsNotFound(self) -> None:
        call = self.sipp.call(self.target, "nobody-here")
        self.assertEqual((call.exitCode, call.failed), (1, 1))
        self.assertIn("404 Not Found", call.errors)

    def test_pathIsHonoured(self) -> None:
        edge = freeSIPPort()
        registered = self.sipp.register(
            self.target, "behind-edge", path=f"sip:{LOOPBACK}:{edge};lr"
        )
        self.assertTrue(registered.ok, registered.describe())
        # The phone's own Contact port has nobody listening: the INVITE can
        # only succeed by going to the Path hop first.
        uas = self.sipp.answer("edge", localPort=edge, traceMessages=True)
        call = self.sipp.call(self.target, "behind-edge")
        self.assertTrue(call.ok, call.describe())
        answered = uas.wait()
        self.assertTrue(answered.ok, answered.describe())
        self.assertIn(f"Route: <sip:{LOOPBACK}:{edge};lr>", answered.messages)
        self.assertIn("INVITE sip:behind-edge@", answered.messages)

    def test_foreignDomainIsNotRelayed(self) -> None:
        call = self.sipp.call(self.target, "someone", domain="elsewhere.invalid")
        self.assertEqual(call.failed, 1)
        self.assertIn("403 Relaying Forbidden", call.errors)


class KamailioLifecycleTests(SynchronousTestCase):
    """
    Kamailio instances of their own: digest auth, stop.
    """

    def setUp(self) -> None:
        requireBinaries("kamailio", "sipp")
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def test_digestAuthentication(self) -> None:
        server = startForTest(self, KamailioServer(auth=True, users={"alice": "sip-secret"}))
        target = f"{server.host}:{server.port}"
        result = self.sipp.register(target, "alice", password="sip-secret")
        self.assertTrue(result.ok, result.describe())
        self.assertFalse(self.sipp.register(target, "alice", password="wrong").ok)
        unauthenticated = self.sipp.register(target, "alice")
        self.assertFalse(unauthenticated.ok)
        self.assertIn("401", unauthenticated.errors)

    def test_stopLeavesNoProcess(self) -> None:
        server = startForTest(self, KamailioServer(children=2))
        pid = server.pid
        assert pid is not None
        # Main process plus workers (2 UDP, 2 TCP) and helpers; Kamailio
        # answers before it has forked them all (4 members seen under load).
        deadline = time.monotonic() + 10
        while len(_groupMembers(pid)) <= 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertGreater(len(_groupMembers(pid)), 4)
        server.stop()
        assertStopped(self, pid)
        self.assertTrue(isUDPPortFree(server.port))
        self.assertFalse(tcpAccepting(server.host, server.port))


class DevstackTests(SynchronousTestCase):
    """
    C{python -m sipxmpp.testing.devstack} brings the stack up and down.
    """

    def setUp(self) -> None:
        requireBinaries("prosody", "prosodyctl", "kamailio", "openssl")

    def test_devstackRunsUntilSIGTERM(self) -> None:
        runDir = tempfile.mkdtemp(prefix="sipxmpp-devstack-test-")
        self.addCleanup(shutil.rmtree, runDir, True)
        xmppPort, sipPort = freePorts(1)[0], freeSIPPort()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sipxmpp.testing.devstack",
                "--run-dir",
                runDir,
                "--xmpp-port",
                str(xmppPort),
                "--sip-port",
                str(sipPort),
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def cleanup() -> None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            assert process.stdout is not None
            process.stdout.close()

        self.addCleanup(cleanup)
        assert process.stdout is not None
        output = []
        deadline = time.monotonic() + 60
        for line in process.stdout:
            output.append(line)
            if line.strip() == READY_LINE or time.monotonic() > deadline:
                break
        self.assertIn(READY_LINE + "\n", output, "".join(output))

        with open(os.path.join(runDir, "devstack.json")) as f:
            state = json.load(f)
        caFile = os.path.join(runDir, "ca.pem")
        self.assertEqual(state["caFile"], caFile)
        self.assertEqual(state["xmpp"]["port"], xmppPort)
        carol = login(LOOPBACK, xmppPort, "example.test", "carol", "demo-password-carol", caFile)
        self.addCleanup(carol.close)
        self.assertEqual(
            carol.roster(),
            {"alice@example.test": "both", "bob@example.test": "both"},
        )
        self.assertEqual(sipOptions(LOOPBACK, sipPort), 200)

        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, "".join(output) + rest)
        self.assertIn("devstack: stopped", rest)
        for pid in (state["xmpp"]["pid"], state["sip"]["pid"]):
            self.assertFalse(groupAlive(pid), f"dev stack left process group {pid}")
        self.assertFalse(os.path.exists(os.path.join(runDir, "devstack.json")))

    def test_demoShowsTheCall(self) -> None:
        """
        What C{make demo} runs: the dev stack with the gateway (the example
        configuration, moved to free ports) places a call, and carol sees
        alice go dnd and come back; nothing is left running afterwards.
        """
        runDir = tempfile.mkdtemp(prefix="sipxmpp-demo-test-")
        self.addCleanup(shutil.rmtree, runDir, True)
        xmppPort, httpPort = freePorts(2)
        sipPort, gatewayPort = freeSIPPort(), freeSIPPort()
        with open(os.path.join(ROOT, "etc", "sipxmpp.conf.example")) as f:
            config = f.read()
        for old, new in [
            ("udp:5060:interface=127.0.0.1 tcp:5060:interface=127.0.0.1",
             f"udp:{gatewayPort}:interface=127.0.0.1 tcp:{gatewayPort}:interface=127.0.0.1"),
            ("sip:127.0.0.1:5070;transport=udp", f"sip:127.0.0.1:{sipPort};transport=udp"),
            ("server = 127.0.0.1:5222", f"server = 127.0.0.1:{xmppPort}"),
            ("ca_file = run/ca.pem", f"ca_file = {runDir}/ca.pem"),
            ("url = sqlite:///run/sipxmpp.sqlite", f"url = sqlite:///{runDir}/sipxmpp.sqlite"),
            ("key_file = run/secret.key", f"key_file = {runDir}/secret.key"),
            ("listen = tcp:8080:interface=127.0.0.1", f"listen = tcp:{httpPort}:interface=127.0.0.1"),
        ]:
            self.assertIn(old, config)
            config = config.replace(old, new)
        configFile = os.path.join(runDir, "sipxmpp.conf")
        with open(configFile, "w") as f:
            f.write(config)
        result = subprocess.run(
            [sys.executable, "-m", "sipxmpp.testing.devstack", "--run-dir", runDir,
             "--xmpp-port", str(xmppPort), "--sip-port", str(sipPort),
             "--gateway-port", str(gatewayPort), "--gateway-config", configFile, "--demo"],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
            timeout=180, check=False,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("demo: alice went dnd during the call and came back", output)
        self.assertIn("dnd 'I am currently on the phone'", output)
        self.assertIn("devstack: stopped", output)
        # Prosody and twistd name the run folder on their command lines;
        # Kamailio is checked by its port.
        leftover = subprocess.run(["pgrep", "-a", "-f", runDir], capture_output=True, text=True,
                                  check=False).stdout
        self.assertEqual(leftover, "", "processes left behind")
        self.assertIsNone(sipOptions(LOOPBACK, sipPort), "Kamailio still answers")
        self.assertFalse(tcpAccepting(LOOPBACK, xmppPort), "Prosody still listens")
        self.assertFalse(tcpAccepting(LOOPBACK, gatewayPort), "the gateway still listens")
