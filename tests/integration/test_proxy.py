"""
The gateway as an edge proxy in front of a real Kamailio registrar, driven
by sipp phones (issue 4).

Every test checks both sides: what SIP did (sipp's counts, what the far
end received, what Kamailio stored) and the telephony state the gateway
derived from it (C{/status}, polled with bounded waits). The helpers here
are shared by the other C{test_proxy_*} modules.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import SharedServer, findBinary, requireBinaries, runCommand
from sipxmpp.testing.sipp import SippResult, SippRunner

DOMAIN = "example.test"


def aor(user: str) -> str:
    """
    The normalised AoR the gateway reports C{user} under.
    """
    return f"sip:{user}@{DOMAIN}"


class Registrar(KamailioServer):
    """
    Kamailio (etc/kamailio.cfg) with the ctl module on a private socket, so
    a test can read what the registrar stored for an AoR.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctlSocket = os.path.join(self.baseDir, "ctl.sock")
        self.defines.append(f'CTL_SOCKET="unix:{self.ctlSocket}"')

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def contacts(self, user: str) -> list[dict[str, str]]:
        """
        The contacts stored for C{user@domain}: one dict per contact with
        kamcmd's fields (C{Address}, C{Path}, C{Expires}, ...); empty when
        the AoR has none.
        """
        result = runCommand(
            [findBinary("kamcmd"), "-s", f"unix:{self.ctlSocket}",
             "ul.lookup", "location", f"{user}@{self.domain}"],
            timeout=10,
        )
        if "AOR not found" in result.stdout:
            return []
        contacts: list[dict[str, str]] = []
        for line in result.stdout.splitlines():
            line = line.strip()
            if line.startswith("Contact:"):
                contacts.append({})
            elif contacts and ": " in line:
                name, _, value = line.partition(": ")
                contacts[-1][name] = value
        return contacts


class Stack:
    """
    A registrar and a gateway in front of it, started and stopped together
    (usable with L{SharedServer}).
    """

    def __init__(self, settings: dict[tuple[str, str], str] | None = None,
                 debug: bool = False) -> None:
        self.registrar = Registrar(debug=debug)
        self.settings = settings or {}
        self.gateway: GatewayServer | None = None

    @property
    def running(self) -> bool:
        return self.registrar.running and self.gateway is not None and self.gateway.running

    def start(self) -> None:
        self.registrar.start()
        self.gateway = GatewayServer(upstreamPort=self.registrar.port, settings=self.settings)
        self.gateway.start()

    def stop(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            self.registrar.stop()


# --- sipp message traces -------------------------------------------------

_BLOCK = re.compile(r"^-{20,} [0-9-]+ [0-9:.]+\s*$", re.M)


class TracedMessage:
    """
    One message from a sipp C{-trace_msg} file.

    @ivar received: sipp received it (else sent it).
    @ivar startLine: its first line.
    @ivar headers: (name, value) in order, one per header line.
    """

    def __init__(self, received: bool, startLine: str, headers: list[tuple[str, str]],
                 body: str) -> None:
        self.received = received
        self.startLine = startLine
        self.headers = headers
        self.body = body

    def values(self, name: str) -> list[str]:
        """
        Every value of header C{name}, comma-separated lists split.
        """
        result: list[str] = []
        for header, value in self.headers:
            if header.lower() == name.lower():
                result.extend(_splitCommas(value))
        return result

    def __repr__(self) -> str:
        return "\n".join([self.startLine] + [f"{n}: {v}" for n, v in self.headers])


def _splitCommas(value: str) -> list[str]:
    parts, depth, quoted, current = [], 0, False, ""
    for char in value:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def tracedMessages(trace: str) -> list[TracedMessage]:
    """
    Parse a sipp message trace into its messages.
    """
    messages = []
    for block in _BLOCK.split(trace):
        first, _, rest = block.lstrip("\n").partition("\n")
        if "message received" not in first and "message sent" not in first:
            continue
        text = rest.replace("\r\n", "\n").lstrip("\n")
        head, _, body = text.partition("\n\n")
        lines = head.split("\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
            elif ":" in line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        messages.append(TracedMessage("received" in first, lines[0].strip(), headers, body))
    return messages


def received(result: SippResult, startsWith: str) -> list[TracedMessage]:
    """
    The messages sipp received whose start line begins with C{startsWith}
    (C{"INVITE "}, C{"SIP/2.0 200"}); the run must have traced messages.
    """
    return [m for m in tracedMessages(result.messages)
            if m.received and m.startLine.startswith(startsWith)]


def sentBy(via: str) -> str:
    """
    The C{host:port} of a Via value.
    """
    return via.split()[1].split(";")[0]


# --- the gateway's telephony state ---------------------------------------


def expectState(gateway: GatewayServer, user: str, state: str, timeout: float = 10.0) -> None:
    """
    Poll the gateway's C{/status} until C{user} is in C{state}; fail with
    every state seen meanwhile otherwise.
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        current = gateway.telephonyState(aor(user))
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == state:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{aor(user)} not {state!r} within {timeout} s; states seen: {seen}"
            )
        time.sleep(0.05)


def metricValue(gateway: GatewayServer, line: str) -> float:
    """
    The value of the metric line that starts with C{line} (name and labels
    exactly as rendered); 0 when absent.
    """
    for text in gateway.metrics().splitlines():
        name, _, value = text.rpartition(" ")
        if name == line:
            return float(value)
    return 0.0


class ProxyTestCase(SynchronousTestCase):
    """
    Base for tests against a shared L{Stack}; subclasses set C{shared}.
    """

    shared: SharedServer[Any]

    def setUp(self) -> None:
        requireBinaries("kamailio", "kamcmd", "sipp")
        self.stack: Stack = self.shared.get(self)
        assert self.stack.gateway is not None
        self.gateway: GatewayServer = self.stack.gateway
        self.registrar: Registrar = self.stack.registrar
        self.sipp = SippRunner(self.mktemp())
        self.addCleanup(self.sipp.stopAll)

    def registerThroughGateway(self, user: str, expires: int = 300,
                               port: int | None = None) -> int:
        """
        Register C{user} from a fresh port through the gateway; return the
        port (start the phone's UAS there).
        """
        port = port or freeSIPPort()
        result = self.sipp.register(self.gateway.address, user, expires=expires, localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def registerAtRegistrar(self, user: str) -> int:
        """
        Register C{user} directly at Kamailio (a phone not behind us).
        """
        port = freeSIPPort()
        result = self.sipp.register(self.registrar.address, user, expires=300, localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def assertSucceeded(self, result: SippResult) -> None:
        self.assertEqual((result.exitCode, result.successful, result.failed), (0, 1, 0),
                         result.describe())


class GatewayWithKamailioTests(ProxyTestCase):
    """
    One Kamailio and one gateway in Path mode for the class; each test uses
    its own users.
    """

    shared = SharedServer(Stack)

    def test_registerRefreshDeregister(self) -> None:
        """
        REGISTER through the gateway reaches Kamailio with the gateway's
        Path, which Kamailio stores; the user is online; a refresh keeps one
        binding and the user online; de-registering (Contact: *) removes the
        binding at Kamailio and takes the user offline.
        """
        gw = self.gateway
        port = self.registerThroughGateway("alice", expires=300)
        expectState(gw, "alice", "online")
        [stored] = self.registrar.contacts("alice")
        self.assertEqual(stored["Address"], f"sip:alice@{LOOPBACK}:{port};transport=UDP")
        self.assertEqual(stored["Path"], f"<sip:{gw.address};lr>")

        self.registerThroughGateway("alice", expires=120, port=port)
        [stored] = self.registrar.contacts("alice")
        self.assertEqual(stored["Path"], f"<sip:{gw.address};lr>")
        self.assertLessEqual(int(stored["Expires"]), 120)
        self.assertEqual(gw.telephonyState(aor("alice")), "online")

        result = self.sipp.unregister(gw.address, "alice")
        self.assertTrue(result.ok, result.describe())
        expectState(gw, "alice", "offline")
        self.assertEqual(self.registrar.contacts("alice"), [])

    def test_registrationExpires(self) -> None:
        """
        A binding that is not refreshed expires at Kamailio and, after its
        grace period, the gateway shows the user offline and stops counting
        the binding.
        """
        gw = self.gateway
        before = metricValue(gw, "sipxmpp_sip_bindings")
        self.registerThroughGateway("bob", expires=2)
        expectState(gw, "bob", "online")
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings"), before + 1)
        # 2 s expiry plus the state machine's 5 s binding grace.
        expectState(gw, "bob", "offline", timeout=15)
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings"), before)
        self.assertEqual(self.registrar.contacts("bob"), [])

    def test_outboundCall(self) -> None:
        """
        A phone behind the gateway calls a phone registered directly at
        Kamailio: the INVITE arrives through the gateway and Kamailio (Via
        chain, two Record-Routes), the BYE follows the route set, and the
        caller is on the phone during the call and online after it.
        """
        gw = self.gateway
        callerPort = self.registerThroughGateway("carol")
        calleePort = self.registerAtRegistrar("outside1")
        uas = self.sipp.answer("outside1", localPort=calleePort, traceMessages=True)
        call = self.sipp.start("uac", gw.address, service="outside1", localPort=callerPort,
                               keys={"domain": DOMAIN, "caller": "carol"},
                               extraArgs=["-d", "1500"], traceMessages=True, waitBound=False)
        expectState(gw, "carol", "on-the-phone")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "carol", "online")

        [invite] = received(answered, "INVITE ")
        self.assertEqual([sentBy(v) for v in invite.values("Via")],
                         [self.registrar.address, gw.address, f"{LOOPBACK}:{callerPort}"])
        rr = invite.values("Record-Route")
        self.assertEqual(len(rr), 2, invite)
        self.assertTrue(rr[0].startswith(f"<sip:{self.registrar.address};lr"), rr)
        self.assertEqual(rr[1], f"<sip:{gw.address};lr>")
        [bye] = received(answered, "BYE ")
        self.assertEqual([sentBy(v) for v in bye.values("Via")],
                         [self.registrar.address, gw.address, f"{LOOPBACK}:{callerPort}"])

    def test_inboundCall(self) -> None:
        """
        A caller outside the gateway calls a user registered through it:
        Kamailio follows the stored Path to the gateway, which forwards to
        the phone's flow; the callee is on the phone during the call and
        online after the caller's BYE, which also passes the gateway.
        """
        gw = self.gateway
        port = self.registerThroughGateway("dave")
        uas = self.sipp.answer("dave", localPort=port, traceMessages=True)
        call = self.sipp.start("uac", self.registrar.address, service="dave",
                               keys={"domain": DOMAIN, "caller": "outside2"},
                               extraArgs=["-d", "1500"], waitBound=False)
        expectState(gw, "dave", "on-the-phone")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "dave", "online")

        [invite] = received(answered, "INVITE ")
        self.assertTrue(invite.startLine.startswith(f"INVITE sip:dave@{LOOPBACK}:{port}"),
                        invite)
        self.assertEqual([sentBy(v) for v in invite.values("Via")][:2],
                         [gw.address, self.registrar.address])
        self.assertEqual(len(invite.values("Via")), 3, invite)
        # Our Route (from the Path) was consumed; we record-routed.
        self.assertEqual(invite.values("Route"), [])
        rr = invite.values("Record-Route")
        self.assertEqual(rr[0], f"<sip:{gw.address};lr>")
        self.assertTrue(rr[1].startswith(f"<sip:{self.registrar.address};lr"), rr)
        [bye] = received(answered, "BYE ")
        self.assertEqual([sentBy(v) for v in bye.values("Via")][:2],
                         [gw.address, self.registrar.address])

    def test_callBetweenTwoUsersSpirals(self) -> None:
        """
        Both users behind the gateway: the INVITE passes it twice (phone to
        Kamailio, Kamailio back via the callee's Path), is not taken for a
        loop, and both users are on the phone, then online.
        """
        gw = self.gateway
        erinPort = self.registerThroughGateway("erin")
        frankPort = self.registerThroughGateway("frank")
        uas = self.sipp.answer("frank", localPort=frankPort, traceMessages=True)
        call = self.sipp.start("uac", gw.address, service="frank", localPort=erinPort,
                               keys={"domain": DOMAIN, "caller": "erin"},
                               extraArgs=["-d", "1500"], traceMessages=True, waitBound=False)
        expectState(gw, "frank", "on-the-phone")
        expectState(gw, "erin", "on-the-phone")
        caller = call.wait()
        self.assertSucceeded(caller)
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "frank", "online")
        expectState(gw, "erin", "online")

        [invite] = received(answered, "INVITE ")
        self.assertEqual(
            [sentBy(v) for v in invite.values("Via")],
            [gw.address, self.registrar.address, gw.address, f"{LOOPBACK}:{erinPort}"],
        )
        rr = invite.values("Record-Route")
        self.assertEqual(len(rr), 3, invite)
        self.assertEqual((rr[0], rr[2]), (f"<sip:{gw.address};lr>",) * 2)
        # The caller's in-dialog requests go through the whole route set.
        [ok] = received(caller, "SIP/2.0 200 OK")[:1]
        self.assertEqual(ok.values("Record-Route"), rr)
        self.assertEqual(len(received(answered, "BYE ")), 1)

    def test_anonymousCallerAttributed(self) -> None:
        """
        Issue 16 item 6: a phone behind the gateway calls another with an
        anonymous From (RFC 3323) and a spoofed P-Asserted-Identity. The
        caller is on the phone by the registration of the phone's address,
        the callee by its contact; the spoofed identity is removed before
        Kamailio (RFC 3325 §5) and gives nobody a state, and no user
        "anonymous" appears.
        """
        gw = self.gateway
        callerPort = self.registerThroughGateway("kate")
        calleePort = self.registerThroughGateway("leo")
        uas = self.sipp.answer("leo", localPort=calleePort, traceMessages=True)
        call = self.sipp.start("proxy_uac_anonymous", gw.address, service="leo",
                               localPort=callerPort,
                               keys={"domain": DOMAIN, "caller": "kate", "asserted": "mallory"},
                               extraArgs=["-d", "1500"], waitBound=False)
        expectState(gw, "leo", "on-the-phone")
        expectState(gw, "kate", "on-the-phone")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "kate", "online")
        expectState(gw, "leo", "online")

        [invite] = received(answered, "INVITE ")
        self.assertEqual(invite.values("From")[0].split(";tag=")[0],
                         '"Anonymous" <sip:anonymous@anonymous.invalid>')
        self.assertEqual(invite.values("P-Asserted-Identity"), [])
        users = gw.status()["users"]
        assert isinstance(users, dict)
        self.assertNotIn("sip:anonymous@anonymous.invalid", users)
        self.assertNotIn(aor("mallory"), users)

    def test_cancelBeforeAnswer(self) -> None:
        """
        The caller cancels while the callee rings: the callee is ringing,
        receives the CANCEL (200) and answers 487, which reaches the caller;
        afterwards the callee is online again, not stuck ringing.
        """
        gw = self.gateway
        port = self.registerThroughGateway("grace")
        uas = self.sipp.start("proxy_uas_cancel", service="grace", localPort=port,
                              traceMessages=True)
        call = self.sipp.start("proxy_uac_cancel", gw.address, service="grace",
                               keys={"domain": DOMAIN, "caller": "outside3"}, waitBound=False)
        expectState(gw, "grace", "ringing")
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        self.assertEqual(len(received(answered, "CANCEL ")), 1)
        expectState(gw, "grace", "online")

    def test_busyAfterRinging(self) -> None:
        """
        The callee rings, then declines with 486: the caller gets the 486,
        the callee gets the hop-by-hop ACK, and the callee goes from ringing
        back to online (the early dialog ended with the failure).
        """
        gw = self.gateway
        port = self.registerThroughGateway("heidi")
        uas = self.sipp.start("proxy_uas_busy_ringing", service="heidi", localPort=port)
        call = self.sipp.start("uac_busy", gw.address, service="heidi",
                               keys={"domain": DOMAIN, "caller": "outside4"}, waitBound=False)
        expectState(gw, "heidi", "ringing")
        self.assertSucceeded(call.wait())
        self.assertSucceeded(uas.wait())
        expectState(gw, "heidi", "online")

    def test_holdAndResume(self) -> None:
        """
        A re-INVITE with a=sendonly puts both users on hold, one with
        a=sendrecv resumes the call; both re-INVITEs take the route set
        through the gateway (twice) and Kamailio.
        """
        gw = self.gateway
        ivanPort = self.registerThroughGateway("ivan")
        judyPort = self.registerThroughGateway("judy")
        uas = self.sipp.start("proxy_uas_hold", service="judy", localPort=judyPort,
                              traceMessages=True)
        call = self.sipp.start("proxy_uac_hold", gw.address, service="judy",
                               localPort=ivanPort, keys={"domain": DOMAIN, "caller": "ivan"},
                               waitBound=False)
        for state in ("on-the-phone", "on-hold", "on-the-phone"):
            expectState(gw, "judy", state)
            expectState(gw, "ivan", state)
        self.assertSucceeded(call.wait())
        answered = uas.wait()
        self.assertSucceeded(answered)
        expectState(gw, "judy", "online")
        expectState(gw, "ivan", "online")
        reinvites = received(answered, "INVITE ")[1:]
        self.assertEqual(len(reinvites), 2)
        for reinvite in reinvites:
            self.assertEqual(
                [sentBy(v) for v in reinvite.values("Via")],
                [gw.address, self.registrar.address, gw.address, f"{LOOPBACK}:{ivanPort}"],
            )
        self.assertIn("a=sendonly", reinvites[0].body)
        self.assertIn("a=sendrecv", reinvites[1].body)

    def test_twoDevicesParallelCalls(self) -> None:
        """
        One user with two registered devices, each in a call: the user
        stays on the phone while either call lasts, and is online (both
        devices still registered) when both have ended.
        """
        gw = self.gateway
        first = self.registerThroughGateway("kim")
        second = self.registerThroughGateway("kim")
        stored = self.registrar.contacts("kim")
        self.assertEqual(sorted(c["Address"] for c in stored),
                         sorted(f"sip:kim@{LOOPBACK}:{p};transport=UDP" for p in (first, second)))
        self.assertEqual({c["Path"] for c in stored}, {f"<sip:{gw.address};lr>"})
        short = self.registerAtRegistrar("outside5")
        long = self.registerAtRegistrar("outside6")
        uasShort = self.sipp.answer("outside5", localPort=short)
        uasLong = self.sipp.answer("outside6", localPort=long)
        callLong = self.sipp.start("uac", gw.address, service="outside6", localPort=second,
                                   keys={"domain": DOMAIN, "caller": "kim"},
                                   extraArgs=["-d", "6000"], waitBound=False)
        expectState(gw, "kim", "on-the-phone")
        callShort = self.sipp.run("uac", gw.address, service="outside5", localPort=first,
                                  keys={"domain": DOMAIN, "caller": "kim"},
                                  extraArgs=["-d", "500"])
        self.assertSucceeded(callShort)
        self.assertSucceeded(uasShort.wait())
        # The long call is still up (it hangs up 6 s after its answer).
        self.assertTrue(callLong.running)
        self.assertEqual(gw.telephonyState(aor("kim")), "on-the-phone")
        self.assertSucceeded(callLong.wait())
        self.assertSucceeded(uasLong.wait())
        expectState(gw, "kim", "online")
        self.assertEqual(len(self.registrar.contacts("kim")), 2)


class RealPhoneCasesTests(ProxyTestCase):
    """
    What linphone found (issue 22), with sipp playing the phones: GRUUs of
    two devices of one user, a retransmitted CANCEL, a TCP phone that
    reconnects. The registrar logs every request, so a test can count what
    reached it.
    """

    shared = SharedServer(lambda: Stack(debug=True))

    def requestsAtRegistrar(self, method: str, callID: str) -> int:
        """
        How many C{method} requests of call C{callID} reached Kamailio
        (its debug log has one line per request, prefixed with the Call-ID).
        """
        with open(self.registrar.consoleLog, encoding="utf-8", errors="replace") as log:
            return sum(1 for line in log
                       if f" {callID}}}" in line and f"request {method} " in line)

    def registerGRUU(self, user: str, instance: str) -> int:
        port = freeSIPPort()
        result = self.sipp.run("proxy_register_gruu", self.gateway.address, service=user,
                               keys={"domain": DOMAIN, "expires": 300, "instance": instance},
                               localPort=port)
        self.assertTrue(result.ok, result.describe())
        return port

    def test_byeToEachDevicesGRUU(self) -> None:
        """
        Two devices of one user register with GRUUs and each calls with its
        pub-gruu as Contact. The far end of the first call hangs up after
        the second call started: Kamailio loose-routes the BYE to the
        gateway with the first device's GRUU as Request-URI, and it reaches
        that device, unchanged (it went to the other device before).
        """
        gw = self.gateway
        instances = ["aaaaaaaa-0000-4000-8000-00000000000a",
                     "bbbbbbbb-0000-4000-8000-00000000000b"]
        ports = [self.registerGRUU("leo", instance) for instance in instances]
        far = [self.registerAtRegistrar(user) for user in ("outside7", "outside8")]
        # The first call's far end hangs up after 4 s, the second's after 1 s.
        uasFirst = self.sipp.start("proxy_uas_bye", service="outside7", localPort=far[0],
                                   extraArgs=["-d", "4000"])
        uasSecond = self.sipp.start("proxy_uas_bye", service="outside8", localPort=far[1],
                                    extraArgs=["-d", "1000"])
        calls = []
        for port, instance, callee in zip(ports, instances, ("outside7", "outside8"), strict=True):
            calls.append(self.sipp.start(
                "proxy_uac_gruu", gw.address, service=callee, localPort=port,
                keys={"domain": DOMAIN, "caller": "leo", "instance": instance,
                      "gruu": f"sip:leo@{DOMAIN};gr=urn:uuid:{instance}"},
                traceMessages=True, waitBound=False))
            expectState(gw, "leo", "on-the-phone")
        for process in (*calls, uasFirst, uasSecond):
            self.assertSucceeded(process.wait(timeout=20))
        for result, instance in zip((c.wait() for c in calls), instances, strict=True):
            [bye] = received(result, "BYE ")
            self.assertEqual(bye.startLine,
                             f"BYE sip:leo@{DOMAIN};gr=urn:uuid:{instance} SIP/2.0")
        expectState(gw, "leo", "online")

    def test_retransmittedCancelAbsorbed(self) -> None:
        """
        A phone sends its CANCEL again (same branch): every copy gets a 200
        from the gateway, and only one CANCEL reaches Kamailio (the second
        started another downstream CANCEL before).
        """
        gw = self.gateway
        port = self.registerThroughGateway("mia")
        uas = self.sipp.start("proxy_uas_cancel", service="mia", localPort=port,
                              traceMessages=True)
        call = self.sipp.start("proxy_uac_cancel_repeat", gw.address, service="mia",
                               keys={"domain": DOMAIN, "caller": "outside9"},
                               traceMessages=True, waitBound=False)
        called = call.wait()
        self.assertSucceeded(called)
        answered = uas.wait()
        self.assertSucceeded(answered)
        # sipp takes the second 200 for a retransmission of the first and
        # answers it with its CANCEL again, until the 487: every copy of
        # the CANCEL got its 200.
        traced = tracedMessages(called.messages)
        sent = [m for m in traced if not m.received and m.startLine.startswith("CANCEL ")]
        answers = [m for m in traced if m.received and m.startLine.startswith("SIP/2.0 200 ")
                   and m.values("CSeq") == ["1 CANCEL"]]
        self.assertGreaterEqual(len(sent), 2)
        self.assertEqual(len(answers), len(sent))
        [cancel] = received(answered, "CANCEL ")
        callID = cancel.values("Call-ID")[0]
        # The gateway's CANCEL, answered at once, is never retransmitted.
        time.sleep(2.0)
        self.assertEqual(self.requestsAtRegistrar("CANCEL", callID), 1)
        self.assertEqual(metricValue(gw, 'sipxmpp_sip_answered_481_total{method="CANCEL"}'), 0)
        expectState(gw, "mia", "online")

    def test_reconnectedTCPPhoneKeepsOneBinding(self) -> None:
        """
        A TCP phone (one +sip.instance) registers, reconnects from a new
        port and registers again: Kamailio replaces its binding, and so
        does the gateway (it kept all of them before).
        """
        gw = self.gateway
        tcp = SippRunner(self.mktemp(), transport="t1")
        self.addCleanup(tcp.stopAll)
        instance = "cccccccc-0000-4000-8000-00000000000c"
        before = metricValue(gw, "sipxmpp_sip_bindings_replaced_total")
        bindings = metricValue(gw, "sipxmpp_sip_bindings")
        for _ in range(3):
            result = tcp.run("proxy_register_gruu", gw.address, service="nina",
                             keys={"domain": DOMAIN, "expires": 300, "instance": instance},
                             localPort=freeSIPPort())
            self.assertTrue(result.ok, result.describe())
        self.assertEqual(len(self.registrar.contacts("nina")), 1)
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings_replaced_total") - before, 2)
        self.assertEqual(metricValue(gw, "sipxmpp_sip_bindings"), bindings + 1)

