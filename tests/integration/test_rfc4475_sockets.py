"""
The 49 RFC 4475 torture messages sent to a real gateway over UDP and TCP
sockets, inside a network namespace that has nothing but C{lo}.

The messages name outside hosts (192.0.2.x, example.com, a broadcast Via,
135.180.130.133), so they are never sent from the host's own network
namespace: the test runs this module as a script under C{unshare -n}.  The
script brings C{lo} up, refuses to go on if the namespace has any other
interface or is the host's, starts a small upstream sink (UDP and TCP on
loopback) and the gateway (a twistd child, so inside the namespace too),
sends every message, and writes what happened to a JSON report.  The test
then checks the report against L{tests.unit.test_rfc4475.TABLE}, the
parser-level table of expected outcomes (imported, not repeated here):

  - the gateway never crashes: same process at the end, C{/healthz} is 200
    and an OPTIONS is still relayed;
  - a request the table rejects gets the table's code from the gateway,
    at the address it came from; a message the table drops (malformed
    responses), and every valid response (its top Via is not ours), gets
    nothing;
  - a valid request gets exactly one final response, from the gateway's
    address;
  - over TCP, a stream the framer cannot split gets its error response (if
    it can be addressed) and is closed;
  - nothing is ever sent anywhere but loopback: in the namespace a send to
    192.0.2.x fails (ENETUNREACH), which the gateway would log as "cannot
    send"/"cannot connect" and count in C{sipxmpp_sip_send_failures_total}
    (or, before that was handled, as a traceback): the log has none of
    these and the counter stays 0.

A barrier separates "answered at once" from "dropped" without sleeping: on
each fresh socket the message is followed by a request with a bad CSeq,
which the gateway answers 400 as soon as it reads it.  The gateway handles
one socket's messages in order and writes its own error answers
immediately, so had it answered the torture message itself, that answer
would arrive before the barrier's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.framing import StreamFramer
from sipxmpp.sip.wire.message import SIPRequest
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import errorResponse, makeResponse
from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import isCI
from tests.integration.test_transport import metricValue
from tests.unit.test_rfc4475 import DROP, PARSE, REJECT, TABLE, torturePath

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# How long a valid request may take to get its final response through the
# gateway and the sink (all on loopback; normally milliseconds).
FINAL_WAIT = 5.0
# How long the gateway may take to answer the barrier.
BARRIER_WAIT = 5.0
# Log lines that would mean the gateway broke.
FORBIDDEN_LOG = ("Traceback", "Unhandled Error", "failed handling", "parser failed")
# A failed send or connect, as the transports log it, with the peer's host.
SEND_FAILURE = re.compile(r"cannot (?:send|connect)\b.*?Peer\(transport='(\w+)', host='([^']*)'")


# --- the script, run inside the namespace ------------------------------------


def _status(data: bytes) -> int | None:
    first = data.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0] == b"SIP/2.0" and first[1].isdigit():
        return int(first[1])
    return None


def _barrier(number: int, port: int, transport: str) -> tuple[bytes, bytes]:
    callID = f"barrier-{number}-{transport}".encode()
    request = (
        b"OPTIONS sip:example.test SIP/2.0\r\n"
        b"Via: SIP/2.0/" + transport.encode() + b" 127.0.0.1:%d;branch=z9hG4bKbarrier%d\r\n"
        % (port, number)
        + b"Max-Forwards: 70\r\nFrom: <sip:barrier@example.test>;tag=b\r\n"
        b"To: <sip:barrier@example.test>\r\nCall-ID: " + callID + b"\r\n"
        b"CSeq: not-a-number OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    return request, callID


class Sink:
    """
    The upstream: UDP and TCP on one loopback port.  It answers every
    request but ACK (INVITE with 486, the rest with 200) to where it came
    from, and records what it received.
    """

    def __init__(self) -> None:
        self.port = freeSIPPort()
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LOOPBACK, self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((LOOPBACK, self.port))
        self.tcp.listen(16)
        for target in (self._serveUDP, self._serveTCP):
            threading.Thread(target=target, daemon=True).start()

    def _answer(self, data: bytes, source: tuple[str, int], transport: str) -> bytes | None:
        entry: dict[str, Any] = {"transport": transport, "source": list(source[:2]),
                                 "first": data.split(b"\r\n", 1)[0].decode("latin-1")}
        try:
            message = parseMessage(data, datagram=transport == "UDP")
            entry["callID"] = message.callID
        except SIPParseError as error:
            entry["error"] = str(error)
            message = None
        with self._lock:
            self.received.append(entry)
        if not isinstance(message, SIPRequest) or message.method == "ACK":
            return None
        code, reason = (486, "Busy Here") if message.method == "INVITE" else (200, "OK")
        try:
            return makeResponse(message, code, reason).toBytes()
        except (SIPParseError, ValueError, KeyError) as error:
            entry["error"] = f"cannot answer: {error}"
            return None

    def _serveUDP(self) -> None:
        while True:
            data, source = self.udp.recvfrom(65536)
            answer = self._answer(data, source, "UDP")
            if answer is not None and source[0] == LOOPBACK:
                self.udp.sendto(answer, source)

    def _serveTCP(self) -> None:
        while True:
            connection, source = self.tcp.accept()
            threading.Thread(target=self._serveConnection, args=(connection, source),
                             daemon=True).start()

    def _serveConnection(self, connection: socket.socket, source: tuple[str, int]) -> None:
        framer = StreamFramer()
        with connection:
            while True:
                data = connection.recv(65536)
                if not data:
                    return
                try:
                    messages = framer.feed(data)
                except SIPParseError as error:
                    with self._lock:
                        self.received.append({"transport": "TCP", "error": str(error)})
                    return
                for message in messages:
                    answer = self._answer(message, source, "TCP")
                    if answer is not None:
                        connection.sendall(answer)


def _checkNamespace(hostNamespace: str) -> None:
    """
    Refuse to send anything unless this is a private namespace (not
    C{hostNamespace}, the one the test runs in) with only lo.
    """
    if os.readlink("/proc/self/ns/net") == hostNamespace:
        raise SystemExit("refusing to run: this is the test's own network namespace")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True,
                           text=True, timeout=10).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    if names != ["lo"]:
        raise SystemExit(f"refusing to run: the namespace has interfaces {names}, not only lo")


def _finalKey(data: bytes) -> tuple[int, str] | None:
    """
    (status, CSeq line) of a final response, or L{None}.
    """
    status = _status(data)
    if status is None or status < 200:
        return None
    cseq = re.search(rb"\r\n(?:CSeq|cseq|CSEQ) *:([^\r]*)", data)
    return status, (cseq.group(1).strip().decode("latin-1") if cseq else "")


def _done(replies: list[bytes], barrierSeen: bool, wantFinals: int) -> bool:
    finals = {key[1] for key in map(_finalKey, replies) if key is not None}
    return barrierSeen and len(finals) >= wantFinals


def _sendUDP(gateway: GatewayServer, number: int, data: bytes,
             wantFinals: int) -> dict[str, Any]:
    target = (LOOPBACK, gateway.sipPort)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        barrier, barrierID = _barrier(number, port, "UDP")
        sock.sendto(data, target)
        sock.sendto(barrier, target)
        before: list[bytes] = []
        after: list[bytes] = []
        sources: set[tuple[str, int]] = set()
        barrierSeen = False
        deadline = time.monotonic() + BARRIER_WAIT
        while not _done(before + after, barrierSeen, wantFinals):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                reply, source = sock.recvfrom(65536)
            except TimeoutError:
                break
            sources.add(source[:2])
            if barrierID in reply:
                if not barrierSeen:
                    barrierSeen = True
                    deadline = time.monotonic() + FINAL_WAIT
                continue
            (after if barrierSeen else before).append(reply)
    return _result(before, after, barrierSeen, sources=sources)


def _sendTCP(gateway: GatewayServer, number: int, data: bytes,
             wantFinals: int) -> dict[str, Any]:
    with socket.create_connection((LOOPBACK, gateway.sipPort), timeout=BARRIER_WAIT) as sock:
        port = sock.getsockname()[1]
        barrier, barrierID = _barrier(number, port, "TCP")
        sock.sendall(data)
        try:
            sock.sendall(barrier)
        except OSError:
            pass  # the gateway already closed the broken stream
        framer = StreamFramer()
        before: list[bytes] = []
        after: list[bytes] = []
        barrierSeen = closed = False
        deadline = time.monotonic() + BARRIER_WAIT
        while not _done(before + after, barrierSeen, wantFinals):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                closed = True
                break
            for reply in framer.feed(chunk):
                if barrierID in reply:
                    if not barrierSeen:
                        barrierSeen = True
                        deadline = time.monotonic() + FINAL_WAIT
                    continue
                (after if barrierSeen else before).append(reply)
    return _result(before, after, barrierSeen, closed=closed)


def _result(before: list[bytes], after: list[bytes], barrierSeen: bool,
            **extra: Any) -> dict[str, Any]:
    replies = before + after
    result: dict[str, Any] = {
        "barrier": barrierSeen,
        # What the gateway answered before it read the barrier: its own
        # answers (and, for relayed requests, maybe the sink's already).
        "immediate": [_status(d) for d in before],
        # Everything, first lines, for failure messages.
        "replies": [d.split(b"\r\n", 1)[0].decode("latin-1") for d in replies],
        # Final responses as [status, CSeq], retransmissions included.
        "finals": [list(k) for k in map(_finalKey, replies) if k is not None],
    }
    result.update(extra)
    if "sources" in result:
        result["sources"] = sorted(list(s) for s in result["sources"])
    return result


def _streamOutcome(data: bytes) -> dict[str, Any]:
    """
    How the framer splits C{data} on a stream: messages, or the error.
    """
    framer = StreamFramer()
    try:
        messages = framer.feed(data)
    except SIPParseError as error:
        answer = errorResponse(error)
        return {"framed": False, "answer": _status(answer) if answer else None}
    return {"framed": True, "messages": len(messages), "buffered": framer.buffered,
            "pendingError": framer.pendingError is not None}


def _transactionKey(data: bytes) -> tuple[str, str, str] | None:
    """
    The server transaction a request would match (RFC 3261 §17.2.3), if
    it parses that far.
    """
    try:
        message = parseMessage(data)
        if not isinstance(message, SIPRequest):
            return None
        via = message.topVia
        method = "INVITE" if message.method == "ACK" else message.method
        return (via.branch or "", via.sentBy.lower(), method)
    except SIPParseError:
        return None


def _rounds(messages: dict[str, bytes]) -> list[list[str]]:
    """
    Split the messages so that no two in one round match the same server
    transaction: some torture messages share branch, sent-by and method
    (cparam01/cparam02, escnull/regescrt), and the second would rightly be
    taken for a retransmission of the first by the same gateway.
    """
    rounds: list[tuple[list[str], set[tuple[str, str, str]]]] = []
    for name, data in messages.items():
        key = _transactionKey(data)
        for names, keys in rounds:  # noqa: B007 -- the round found is used below
            if key is None or key not in keys:
                break
        else:
            names, keys = [], set()
            rounds.append((names, keys))
        names.append(name)
        if key is not None:
            keys.add(key)
    return [names for names, _ in rounds]


def _alive(gateway: GatewayServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{gateway.httpPort}/healthz",
                                timeout=5) as response:
        health = response.status
    results = {}
    for transport, send in (("UDP", _sendUDP), ("TCP", _sendTCP)):
        options = (
            f"OPTIONS sip:example.test SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bKalive{transport};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alive@example.test>;tag=a\r\n"
            f"To: <sip:example.test>\r\nCall-ID: alive-{transport}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        results[transport] = send(gateway, 10_000, options, 1)
    return {"healthz": health, "options": results}


def runInside(directory: str, reportPath: str, hostNamespace: str) -> None:
    """
    The script's body: send everything, write the report.
    """
    _checkNamespace(hostNamespace)
    sink = Sink()
    with open(os.path.join(directory, "MANIFEST.tsv"), encoding="utf-8") as f:
        names = [line.split("\t")[0] for line in f.read().splitlines()[1:] if line]
    messages = {}
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            messages[name] = f.read()
    report: dict[str, Any] = {"messages": {}, "gateways": [], "sinkPort": sink.port}
    for name, data in messages.items():
        report["messages"][name] = {"request": not data.startswith(b"SIP/"),
                                    "stream": _streamOutcome(data), "UDP": None, "TCP": None}
    rounds = _rounds(messages)
    try:
        for transport, send in (("UDP", _sendUDP), ("TCP", _sendTCP)):
            for roundNumber, roundNames in enumerate(rounds):
                # A fresh gateway per transport and round: the same message
                # over UDP and then TCP would match the UDP transaction.
                gateway = GatewayServer(upstreamPort=sink.port, upstreamTransport="udp")
                gateway.start()
                entry: dict[str, Any] = {"transport": transport, "round": roundNumber,
                                         "names": roundNames,
                                         "address": [LOOPBACK, gateway.sipPort]}
                report["gateways"].append(entry)
                try:
                    pid = gateway.pid
                    for number, name in enumerate(roundNames):
                        message = report["messages"][name]
                        stream = message["stream"]
                        if transport == "TCP" and stream["framed"] and not stream["messages"]:
                            # clerr (body shorter than its Content-Length),
                            # baddn (no empty line after the header): on a
                            # stream the framer waits for the rest, and would
                            # take the barrier as that rest.
                            continue
                        valid = (message["request"]
                                 and TABLE[name].outcome == PARSE)
                        wanted = (stream.get("messages", 1) if transport == "TCP" else 1
                                  ) if valid else 0
                        message[transport] = send(gateway, number, messages[name], wanted)
                        message[transport]["gateway"] = len(report["gateways"]) - 1
                    entry["alive"] = _alive(gateway)
                    entry["samePid"] = gateway.pid == pid and gateway.running
                    entry["metrics"] = gateway.metrics()
                finally:
                    with open(gateway.consoleLog, encoding="utf-8", errors="replace") as f:
                        entry["log"] = f.read()
                    gateway.stop()
    finally:
        report["sink"] = sink.received
        with open(reportPath, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inside", action="store_true",
                        help="run the sends (only inside a fresh network namespace)")
    parser.add_argument("--dir", required=True, help="the RFC 4475 messages")
    parser.add_argument("--report", required=True, help="where to write the JSON report")
    parser.add_argument("--host-netns", required=True,
                        help="the network namespace (net:[inode]) this must not be")
    options = parser.parse_args(argv)
    if not options.inside:
        parser.error("run with --inside, under unshare -n")
    runInside(options.dir, options.report, options.host_netns)
    return 0


# --- the test, run by trial on the host --------------------------------------


def _unshareProblem() -> str | None:
    """
    Why a network namespace cannot be made here, or L{None}.
    """
    for program in ("unshare", "ip"):
        if shutil.which(program, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{program} is not installed"
    result = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True,
                            timeout=10, check=False)
    if result.returncode != 0:
        return f"unshare -n is not permitted here: {result.stderr.strip()}"
    return None


class RFC4475SocketTests(SynchronousTestCase):
    """
    The torture messages over UDP and TCP to a gateway in a namespace.
    """

    report: dict[str, Any] | None = None
    failure: str | None = None

    def setUp(self) -> None:
        self.directory = torturePath()
        problem = None
        if not os.path.isdir(self.directory):
            problem = f"RFC 4475 messages not found in {self.directory} (set SIPXMPP_RFC4475_DIR)"
        else:
            problem = _unshareProblem()
        if problem is not None:
            if isCI():
                self.fail(problem + " (CI=true: this must run, CI runs as root)")
            self.skipTest(problem)
        # One run in the namespace serves every test of the class.
        if RFC4475SocketTests.report is None and RFC4475SocketTests.failure is None:
            try:
                RFC4475SocketTests.report = self.runInNamespace()
            except AssertionError as e:
                RFC4475SocketTests.failure = str(e)
        if RFC4475SocketTests.failure is not None:
            self.fail(RFC4475SocketTests.failure)

    def runInNamespace(self) -> dict[str, Any]:
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        reportPath = os.path.join(work, "report.json")
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": ROOT + (os.pathsep + path if path else "")}
        command = ["unshare", "-n", "--", sys.executable, "-m",
                   "tests.integration.test_rfc4475_sockets", "--inside",
                   "--dir", self.directory, "--report", reportPath,
                   "--host-netns", os.readlink("/proc/self/ns/net")]
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
        if result.returncode != 0 or not os.path.exists(reportPath):
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n"
                      f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        with open(reportPath, encoding="utf-8") as f:
            report: dict[str, Any] = json.load(f)
        return report

    @property
    def result(self) -> dict[str, Any]:
        assert RFC4475SocketTests.report is not None
        return RFC4475SocketTests.report

    def test_allMessagesSent(self) -> None:
        """
        All 49 were sent over UDP; over TCP all but the two the framer
        waits on (clerr, baddn).  Two rounds keep the messages that share
        a transaction key apart, each on fresh gateways.
        """
        messages = self.result["messages"]
        self.assertEqual(sorted(messages), sorted(TABLE))
        self.assertEqual([n for n, e in messages.items() if e["UDP"] is None], [])
        self.assertEqual(sorted(n for n, e in messages.items() if e["TCP"] is None),
                         ["baddn.dat", "clerr.dat"])
        rounds = [g["names"] for g in self.result["gateways"] if g["transport"] == "UDP"]
        self.assertEqual(len(rounds), 2, rounds)
        self.assertEqual(sorted(rounds[1]), ["cparam02.dat", "regescrt.dat"])

    def test_gatewaySurvived(self) -> None:
        """
        Each gateway is the same process at the end, healthy, and still
        relays an OPTIONS on UDP and on TCP.
        """
        for gateway in self.result["gateways"]:
            alive = gateway.get("alive")
            self.assertIsNotNone(alive, gateway["log"][-3000:])
            self.assertTrue(gateway["samePid"])
            self.assertEqual(alive["healthz"], 200)
            for transport in ("UDP", "TCP"):
                self.assertEqual(alive["options"][transport]["finals"],
                                 [[200, "1 OPTIONS"]], alive)

    def test_nothingLeftLoopback(self) -> None:
        """
        No send was attempted to a non-loopback address (it would have
        failed in the namespace and been logged and counted), no handler
        broke, and the sink only heard from loopback.
        """
        loopbackFailures = 0
        failureLines: list[str] = []
        for gateway in self.result["gateways"]:
            metrics = gateway["metrics"]
            failures = [SEND_FAILURE.search(line) for line in gateway["log"].splitlines()
                        if "cannot send" in line or "cannot connect" in line]
            self.assertNotIn(None, failures, "a send failure logged without its peer")
            for match in failures:
                assert match is not None
                self.assertIn(match.group(2), (LOOPBACK, "::1"), match.group(0))
            # Every counted failure is one of those logged, all on loopback.
            for transport in ("UDP", "TCP", "TLS"):
                self.assertEqual(metricValue(metrics, "sipxmpp_sip_send_failures_total",
                                             transport=transport),
                                 sum(1 for m in failures if m and m.group(1) == transport),
                                 (transport, gateway["log"][-3000:]))
            loopbackFailures += len(failures)
            failureLines += [line for line in gateway["log"].splitlines()
                             if "cannot send" in line or "cannot connect" in line]
            self.assertEqual(metricValue(metrics, "sipxmpp_sip_handler_errors_total"), 0)
            for line in gateway["log"].splitlines():
                for forbidden in FORBIDDEN_LOG:
                    self.assertNotIn(forbidden, line)
        # The only ones expected: dblreq's two answers, after the gateway
        # closed its broken stream (see test_outcomes), each trying to
        # reach the phone's port again (RFC 3261 18.2.2).  The second
        # shares the first's attempt if it comes while that is pending.
        self.assertIn(loopbackFailures, (1, 2), failureLines)
        peers = {re.sub(r".*cannot connect to (Peer\(.*?\)).*", r"\1", line)
                 for line in failureLines}
        self.assertEqual(len(peers), 1, failureLines)
        self.assertIn("transport='TCP'", peers.pop())
        sink = self.result["sink"]
        self.assertTrue(sink, "the sink heard nothing: nothing was relayed")
        self.assertEqual({e["source"][0] for e in sink if "source" in e}, {LOOPBACK})
        self.assertEqual([e for e in sink if "error" in e], [])

    def test_answersComeFromTheGateway(self) -> None:
        """
        Every UDP answer came from the address of the gateway it was sent to.
        """
        gateways = self.result["gateways"]
        for name, entry in self.result["messages"].items():
            outcome = entry["UDP"]
            for source in outcome["sources"]:
                self.assertEqual(source, gateways[outcome["gateway"]]["address"], name)

    def test_outcomes(self) -> None:
        """
        Each message, on each transport, has the outcome the parser-level
        table gives it.
        """
        for name, entry in sorted(self.result["messages"].items()):
            expect = TABLE[name]
            for transport in ("UDP", "TCP"):
                outcome = entry[transport]
                if outcome is None:
                    continue
                with self.subTest(f"{name} over {transport}"):
                    self.assertTrue(outcome["barrier"] or outcome.get("closed"),
                                    f"{name}: the gateway answered not even the barrier")
                    stream = entry["stream"]
                    if transport == "TCP" and not stream["framed"]:
                        self.checkUnframed(name, stream, outcome)
                    elif transport == "TCP" and stream["pendingError"]:
                        self.checkBrokenAfter(name, stream, outcome)
                    else:
                        requests = stream["messages"] if transport == "TCP" else 1
                        self.checkOne(name, entry["request"], requests, expect, outcome)

    def checkUnframed(self, name: str, stream: dict[str, Any], outcome: dict[str, Any]) -> None:
        """
        A stream the framer cannot split: its error answer (400 where it
        can be addressed), then the connection is closed.
        """
        expected = [stream["answer"]] if stream["answer"] is not None else []
        self.assertEqual(outcome["immediate"], expected, (name, outcome))
        self.assertEqual(expected, [400], name)
        self.assertTrue(outcome["closed"], (name, "connection left open", outcome))

    def checkBrokenAfter(self, name: str, stream: dict[str, Any],
                         outcome: dict[str, Any]) -> None:
        """
        Complete messages, then bytes that break the framing (dblreq: a
        REGISTER, an INVITE, then leftover octets): the messages are
        relayed, then the connection is closed (the break itself has no
        start line to answer).  The answers relayed back find the
        connection gone; the one failed connect that costs is checked in
        test_nothingLeftLoopback.
        """
        self.assertEqual(name, "dblreq.dat")
        self.assertTrue(outcome["closed"], (name, outcome))
        self.assertEqual([c for c in outcome["immediate"] if c is not None and c >= 200], [],
                         outcome)
        relayed = sorted(e["first"].split()[0] for e in self.result["sink"]
                         if str(e.get("callID")).startswith("dblreq."))
        # REGISTER over UDP (the rest of that datagram is ignored); REGISTER
        # and INVITE over TCP, and the gateway's ACK of the sink's 486.
        self.assertEqual(relayed, ["ACK", "INVITE", "REGISTER", "REGISTER"], stream)

    def checkOne(self, name: str, isRequest: bool, requests: int, expect: Any,
                 outcome: dict[str, Any]) -> None:
        replies = outcome["replies"]
        if not isRequest or expect.outcome == DROP:
            # Malformed responses are dropped by the transport, valid ones
            # (whose top Via is not ours) by the proxy.
            self.assertEqual(replies, [], name)
            return
        codes = [code for code, _ in outcome["finals"]]
        if expect.outcome == REJECT:
            # Answered at once by the gateway, with the table's code.
            self.assertEqual(outcome["immediate"], [expect.code], (name, replies))
            self.assertEqual(codes, [expect.code], (name, replies))
            return
        self.assertEqual(expect.outcome, PARSE)
        # Each valid request gets one final answer (the proxy's or, relayed,
        # the sink's), retransmissions of it aside.
        byCSeq: dict[str, set[int]] = {}
        for code, cseq in outcome["finals"]:
            byCSeq.setdefault(cseq, set()).add(code)
        self.assertEqual(len(byCSeq), requests, (name, replies))
        self.assertTrue(all(len(c) == 1 for c in byCSeq.values()), (name, replies))
        proxyCode = re.search(r"proxy: (\d{3})", expect.application)
        if proxyCode is not None:
            self.assertEqual(codes[0], int(proxyCode.group(1)), (name, replies))


class NamespaceGuardTests(SynchronousTestCase):
    """
    Without a network namespace the torture test skips locally and fails
    under CI; the script refuses to run in the test's own namespace.
    """

    def test_missingUnshareReported(self) -> None:
        self.patch(os, "environ", {**os.environ, "PATH": "/nonexistent"})
        self.patch(shutil, "which", lambda name, path=None: None)
        self.assertEqual(_unshareProblem(), "unshare is not installed")

    def test_skipLocallyFailUnderCI(self) -> None:
        module = sys.modules[__name__]
        self.patch(module, "_unshareProblem", lambda: "unshare -n is not permitted here: EPERM")
        case = RFC4475SocketTests("test_allMessagesSent")
        if not os.path.isdir(torturePath()):
            self.skipTest("RFC 4475 messages not found")
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "CI"})
        error = self.assertRaises(SkipTest, case.setUp)
        self.assertIn("not permitted", str(error))
        self.patch(os, "environ", {**os.environ, "CI": "true"})
        failure = self.assertRaises(FailTest, case.setUp)
        self.assertIn("CI=true", str(failure))

    def test_refusesTheHostNamespace(self) -> None:
        error = self.assertRaises(SystemExit, _checkNamespace, os.readlink("/proc/self/ns/net"))
        self.assertIn("own network namespace", str(error))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
