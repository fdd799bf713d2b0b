"""
End-to-end presence latency under SIP load, everything real, on loopback.

sipp phones, the gateway (twistd child) in front of Kamailio, Prosody, the
user's Psi-style slixmpp client (XEP-0146, case b) and a watching contact
(the stdlib client of L{sipxmpp.testing.demo.Watcher}). While two other
users registered through the gateway call each other at C{--rate} calls/s
(sipp UAC/UAS; each call spirals through the gateway twice), the measured
callers place one call at a time to a phone that answers at once (200 OK,
no 180, so the caller's state changes on the 200 OK alone):

  - case b: alice, whose Psi-style client is set to dnd by remote control;
  - case a: carol, who has no client: the gateway's own resource shows dnd.

Measured, per call: from the INVITE's 200 OK leaving the gateway towards
the caller's phone to the watcher receiving the caller's dnd presence.

  - The 200 OK's departure: dumpcap captures on C{lo} (BPF: UDP from the
    gateway's SIP port to the measured phones' ports); the packet's kernel
    timestamp (CLOCK_REALTIME) of the first 200 OK to each measured
    INVITE, matched by Call-ID.
  - The watcher's receive time: C{time.monotonic()} in its reader thread
    right after the stanza is parsed, put on CLOCK_REALTIME with an offset
    sampled before and after the run (the drift between the two is printed).

Calls alternate between the two cases; each waits until the watcher has
seen the caller back to normal before the next one, so calls never
overlap. One command, bounded (C{--timeout}, default 280 s; servers and
sipp are stopped whatever happens):

  python bench/e2e_latency.py [--calls 150] [--rate 100] [--prosody-nagle-off]

Prints raw figures per case and for both together; the last line covers
both cases together:
  e2e presence latency p50 X ms p99 Y ms
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sipxmpp.testing.demo import Watcher  # noqa: E402
from sipxmpp.testing.gateway import GatewayServer  # noqa: E402
from sipxmpp.testing.kamailio import KamailioServer  # noqa: E402
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort  # noqa: E402
from sipxmpp.testing.process import findBinary, spawn, stopServersOnTerminate, terminate  # noqa: E402
from sipxmpp.testing.prosody import ProsodyServer  # noqa: E402
from sipxmpp.testing.sipp import SippProcess, SippRunner, parseStatistics  # noqa: E402
from sipxmpp.testing.templates import etcPath  # noqa: E402
from sipxmpp.testing.xmppprobe import login  # noqa: E402

CLIENTS = os.path.join(ROOT, "tests", "integration", "xmppclients.py")
DOMAIN = "example.test"
PHONE = "I am currently on the phone"
USERS = {"alice": "alice-pw", "carol": "carol-pw", "watcher": "watcher-pw"}
NORMAL = "alice at the desk"


class BenchError(Exception):
    pass


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: n=0"
    return (
        f"{name}: n={len(values)} min={min(values):.2f} p50={percentile(values, 50):.2f} "
        f"p90={percentile(values, 90):.2f} p99={percentile(values, 99):.2f} "
        f"max={max(values):.2f} mean={statistics.fmean(values):.2f} ms"
    )


def clockOffset() -> float:
    """
    CLOCK_REALTIME minus CLOCK_MONOTONIC, from the tightest of a few samples.
    """
    best = None
    for _ in range(50):
        a = time.monotonic()
        r = time.time()
        b = time.monotonic()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) / 2)
    assert best is not None
    return best[1]


def wait(what: str, probe: Any, timeout: float, interval: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class DesktopClient:
    """
    alice's Psi-style client (tests/integration/xmppclients.py) in a
    subprocess, its events read by a thread.
    """

    def __init__(self, prosody: ProsodyServer) -> None:
        args = [sys.executable, CLIENTS, "--jid", f"alice@{DOMAIN}/psi",
                "--password", USERS["alice"], "--host", prosody.host, "--port", str(prosody.port),
                "--ca-file", prosody.caFile, "--priority", "5", "--status", NORMAL, "--rc", "psi"]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def stop(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "quit"}\n')
            self.process.stdin.flush()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def prosodyTemplate(nagleOff: bool, workDir: str) -> str | None:
    if not nagleOff:
        return None
    with open(etcPath("prosody.cfg.lua.in"), encoding="utf-8") as f:
        text = f.read()
    if "nagle" not in text:
        text = text.replace('VirtualHost "@DOMAIN@"',
                            'network_settings = { nagle = false }\n\nVirtualHost "@DOMAIN@"', 1)
    path = os.path.join(workDir, "prosody.cfg.lua.in")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def capturedOKs(pcap: str) -> dict[str, float]:
    """
    Call-ID -> kernel timestamp of the first 200 OK to an INVITE in C{pcap}.
    """
    out = subprocess.run(
        [findBinary("tshark"), "-r", pcap, "-n", "-d", "udp.port==0-65535,sip",
         "-Y", 'sip.Status-Code == 200 && sip.CSeq.method == "INVITE"',
         "-T", "fields", "-e", "frame.time_epoch", "-e", "sip.Call-ID"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    first: dict[str, float] = {}
    for line in out.splitlines():
        stamp, _, callID = line.partition("\t")
        if callID and callID not in first:
            first[callID] = float(stamp)
    return first


def run(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.timeout
    workDir = tempfile.mkdtemp(prefix="sipxmpp-e2e-bench-")
    prosody = ProsodyServer(users=USERS, template=prosodyTemplate(args.prosody_nagle_off, workDir))
    prosody.subscribe("alice", "watcher")
    prosody.subscribe("carol", "watcher")
    kamailio = KamailioServer(children=4, shmMB=256)
    gateway: GatewayServer | None = None
    client: DesktopClient | None = None
    capture: subprocess.Popen[bytes] | None = None
    watcher: Watcher | None = None
    sipp = SippRunner(os.path.join(workDir, "sipp"), timeout=args.timeout)
    try:
        prosody.start()
        kamailio.start()
        gateway = GatewayServer(
            upstreamPort=kamailio.port, xmppServer=f"{prosody.host}:{prosody.port}",
            caFile=prosody.caFile, settings={("log", "level"): "info"},
        )
        gateway.start()
        gateway.addAccount(f"sip:alice@{DOMAIN}", f"alice@{DOMAIN}", USERS["alice"])
        gateway.addAccount(f"sip:carol@{DOMAIN}", f"carol@{DOMAIN}", USERS["carol"])
        registrar = f"{kamailio.host}:{kamailio.port}"

        probe = login(LOOPBACK, prosody.port, DOMAIN, "watcher", USERS["watcher"],
                      prosody.caFile, "watch")
        watcher = Watcher(probe)
        probe.sendPresence()
        watcher.start()
        client = DesktopClient(prosody)
        wait("alice's desktop client", lambda: any(e.get("event") == "ready"
                                                   for e in client.events), 20)  # type: ignore[union-attr]

        def register(user: str, where: str) -> int:
            port = freeSIPPort()
            result = sipp.register(where, user, DOMAIN, expires=3600, localPort=port)
            if not result.ok:
                raise BenchError(f"REGISTER {user}: {result.describe()}")
            return port

        ports = {u: register(u, gateway.address) for u in ("alice", "carol", "bg1", "bg2")}
        calleePort = register("callee", registrar)
        for user in ("alice", "carol"):
            wait(f"{user}'s gateway session", lambda u=user: any(
                s.jid == f"{u}@{DOMAIN}/sipxmpp" and s.priority == -1
                for s in watcher.sightings), 20)  # type: ignore[union-attr]
        time.sleep(1.0)  # command discovery of alice's client

        total = args.calls * 2
        callee = sipp.start("e2e_uas_answer", service="callee", localPort=calleePort,
                            calls=total + 10)
        background: list[SippProcess] = []
        if args.rate > 0:
            background.append(sipp.start("uas", service="bg2", localPort=ports["bg2"],
                                         calls=10**7, extraArgs=["-fd", "1"]))
            background.append(sipp.start(
                "uac", gateway.address, service="bg2", keys={"domain": DOMAIN, "caller": "bg1"},
                calls=10**7, waitBound=False,
                extraArgs=["-r", str(args.rate), "-d", str(args.bg_hold), "-fd", "1"],
            ))
            time.sleep(3.0)  # let the background load reach its rate

        pcap = os.path.join(workDir, "sip.pcap")
        bpf = (f"udp and src port {gateway.sipPort} and "
               f"(dst port {ports['alice']} or dst port {ports['carol']})")
        captureLog = os.path.join(workDir, "dumpcap.log")
        capture = spawn([findBinary("dumpcap"), "-i", "lo", "-f", bpf, "-w", pcap, "-q"],
                        captureLog)
        wait("dumpcap", lambda: os.path.exists(pcap) and os.path.getsize(pcap) > 0, 10,
             interval=0.05)
        time.sleep(0.5)

        offsetBefore = clockOffset()
        cases = {
            "b": ("alice", f"alice@{DOMAIN}/psi",
                  lambda s: s.show == "" and s.status == NORMAL),
            "a": ("carol", f"carol@{DOMAIN}/sipxmpp",
                  lambda s: s.show == "" and s.priority < 0),
        }
        seen: dict[str, list[tuple[str, float]]] = {"a": [], "b": []}
        failures = 0
        for i in range(total):
            if time.monotonic() > deadline - 20:
                print(f"bench: stopping early at the {args.timeout:g} s bound "
                      f"after {i} calls", flush=True)
                break
            case = "b" if i % 2 == 0 else "a"
            user, full, isNormal = cases[case]
            mark = len(watcher.sightings)
            call = sipp.start("uac", gateway.address, service="callee", localPort=ports[user],
                              keys={"domain": DOMAIN, "caller": user}, timeout=20,
                              extraArgs=["-d", str(args.hold)], waitBound=False)
            callID = f"1-{call.pid}@{LOOPBACK}"
            try:
                dnd = wait(f"{full} dnd (call {i})", lambda m=mark, f=full: next(
                    (s for s in watcher.sightings[m:]  # type: ignore[union-attr]
                     if s.jid == f and s.show == "dnd" and s.status == PHONE), None), 10)
            except BenchError as e:
                failures += 1
                print(f"bench: {e}", flush=True)
                call.stop()
                continue
            seen[case].append((callID, dnd.at))
            result = call.wait(20)
            if not result.ok:
                failures += 1
                print(f"bench: call {i} failed: {result.describe()}", flush=True)
            after = watcher.sightings.index(dnd)
            wait(f"{full} back to normal (call {i})", lambda a=after, f=full, n=isNormal: any(
                s.jid == f and n(s) for s in watcher.sightings[a:]), 10)  # type: ignore[union-attr]
        offsetAfter = clockOffset()

        time.sleep(0.5)
        terminate(capture)
        capture = None
        bgStats = []
        for proc in background:
            result = proc.stop()
            successful, failed = parseStatistics(result.output, proc._files["stat"])
            bgStats.append((proc.args[proc.args.index("-sf") + 1].rsplit("/", 1)[-1],
                            successful, failed))
        callee.stop()

        oks = capturedOKs(pcap)
        offset = (offsetBefore + offsetAfter) / 2
        results: dict[str, list[float]] = {}
        unmatched = 0
        for case, items in seen.items():
            values = []
            for callID, at in items:
                sent = oks.get(callID)
                if sent is None:
                    unmatched += 1
                    continue
                values.append((at + offset - sent) * 1000)
            results[case] = values

        print(f"method: 200 OK departure = dumpcap kernel timestamp on lo (CLOCK_REALTIME); "
              f"watcher receive = monotonic clock in its reader thread + offset to "
              f"CLOCK_REALTIME (drift over the run {abs(offsetAfter - offsetBefore) * 1e3:.3f} ms)")
        elapsed = args.timeout - (deadline - time.monotonic())
        print(f"background: sipp uac -r {args.rate} (calls of {args.bg_hold} ms, bg1 -> bg2, "
              f"both registered through the gateway: each call passes it twice); "
              f"{'; '.join(f'{n}: {s} successful, {f} failed' for n, s, f in bgStats) or 'none'}")
        print(f"measured calls: {sum(len(v) for v in seen.values())} with a dnd seen, "
              f"{failures} failed or not seen, {unmatched} without a captured 200 OK; "
              f"wall time {elapsed:.0f} s")
        print(describe("case b (remote control of alice's Psi-style client)", results["b"]))
        print(describe("case a (the gateway's own resource, carol)", results["a"]))
        combined = results["a"] + results["b"]
        print(describe("both cases", combined))
        if not combined:
            raise BenchError("no call measured")
        print("the last line covers both cases together")
        print(f"e2e presence latency p50 {percentile(combined, 50):.2f} ms "
              f"p99 {percentile(combined, 99):.2f} ms", flush=True)
    finally:
        if capture is not None:
            terminate(capture)
        sipp.stopAll()
        if watcher is not None:
            watcher.stop()
            watcher.probe.close()
        if client is not None:
            client.stop()
        for server in (gateway, kamailio, prosody):
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150,
                        help="measured calls per case (default 150; both cases: twice that)")
    parser.add_argument("--rate", type=int, default=100,
                        help="background calls per second (default 100; 0: none)")
    parser.add_argument("--hold", type=int, default=200,
                        help="length of a measured call, ms (default 200)")
    parser.add_argument("--bg-hold", type=int, default=1000,
                        help="length of a background call, ms (default 1000)")
    parser.add_argument("--timeout", type=float, default=280,
                        help="bound on the whole run, seconds (default 280)")
    parser.add_argument("--prosody-nagle-off", action="store_true",
                        help="run Prosody with network_settings = { nagle = false }")
    args = parser.parse_args()
    try:
        run(args)
    except BenchError as e:
        raise SystemExit(f"bench: {e}") from None


if __name__ == "__main__":
    stopServersOnTerminate()
    main()
