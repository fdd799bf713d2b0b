"""
Fault-injection soak: calls at a steady rate through the gateway and
Kamailio while the servers on the path are killed, stopped and lose
packets; afterwards every user's presence must be right again.

Run from the repository root, as root (for the network namespace)::

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 2] [--users 6]
                                   [--hold 3000] [--cycles 1] [--no-faults]
                                   [--allocators] [--capture FILE]

C{--no-faults} places the same calls without any fault (the gateway is
not restarted, so warm-up is counted from the first call): for telling
the gateway's memory per call from what the faults leave. C{--allocators}
asks the gateway, after a full garbage collection, for its malloc and
CPython allocator figures and the objects its collector tracks, before
the fault cycles and after each: whether the RSS steps at faults are live
memory or memory the allocators keep.

Isolation: the bench re-executes itself under C{unshare -n} (C{--inside}),
so every process of the soak (Prosody, Kamailio, the gateway, sipp, the
desktop clients, the watcher) has a loopback of its own: the packet loss
and the ports never touch the host's C{lo}. Without root or C{unshare} it
runs on the host's loopback and skips the packet loss (a printed line
says so).

The stack: Prosody with C{--users} users (C{soak0}...), each in the roster
of a watching contact (L{sipxmpp.testing.demo.Watcher}, a plain-socket
client) and each logged in with a Psi-style desktop client that answers
remote control (XEP-0146, C{tests/integration/xmppclients.py}, logging in
again one second after Prosody went away, with the status it had), at its
own status C{"soakN at the desk"}, priority 5; Kamailio as the registrar;
the gateway in front of it with every user provisioned. Every user's phone
is one sipp UAS (C{soak_uas.xml}) registered through the gateway, so each
call spirals: UAC -> gateway -> Kamailio -> gateway -> UAS, and both its
caller and its callee are users of the gateway. One sipp UAC
(C{soak_uac.xml}) places C{--rate} calls/s of C{--hold} ms for
C{--minutes}, each user calling the next one in turn.

Faults, at fixed fractions of the run (D = --minutes):

  - 0.15 D: the gateway is SIGKILLed and started again at once, with the
    same store and ports (this is the gateway process whose memory is
    watched from then on);
  - 0.40 D: Prosody is SIGKILLed and started again (same data, same port);
    the watcher logs in again;
  - 0.55 D: Kamailio's process group is SIGSTOPped for 10 s, then
    SIGCONTinued (same process, same port);
  - 0.70 D to 0.85 D: 5 % of the UDP packets on the namespace's loopback
    are dropped (every SIP hop). C{tc qdisc ... netem loss 5%} when the
    kernel has netem; this machine's kernel has no sch_netem
    (CONFIG_NET_SCH_NETEM unset), so then an nftables rule on the input
    hook (C{meta l4proto udp numgen random mod 100 < 5 drop}): dropped on
    receipt, so the sender sees no error, as with a real loss (the output
    hook would fail its send with EPERM; C{nft} is Debian's C{nftables}).
    Neither available: skipped, with a printed line.

C{--cycles K} repeats the last three (Prosody, Kamailio, loss) K times,
in K equal slots from 0.35 D to 0.95 D, each fault at the same place in
its slot as above (K = 1 gives the fractions above); the gateway's RSS is
then printed at the quiet end of each cycle, which tells a one-time step
(a high-water mark) from a growth per fault.

Then the UAC places no more calls; once its last call has ended, the UAS
is stopped: nobody is on the phone (the true telephony state), and the
bench is quiet. The watcher's view is then polled for 12 s. A user has
converged when its desktop client shows its own status again (available,
no show, its own status text, priority 5) and the gateway's resource is
not dnd, and stays so. Its convergence time runs from the end of the last
call it took part in (caller or callee; from the soak_uac.xml log) to the
last presence the watcher saw of its client or gateway resource (0 when
that came first): conservative, as a later repeat of the same presence
counts too. A user is B{stuck} when it has not converged within 10 s:
still dnd anywhere after 12 s of quiet, or its client's saved status lost
(another text or show), or its client absent, or the right presence came
more than 10 s after its last call. The gateway's C{/status} telephony
state of every user is printed too.

Failed calls. Each call logs its INVITE's time and its outcome
(C{soak_uac.xml}); a call has failed unless INVITE, 200, ACK, BYE and its
200 all went through. Its window runs from its INVITE to its outcome (to
INVITE + 40 s when sipp aborted it without an outcome). Excused windows:

  - the gateway down: from its SIGKILL until 2 s after it answers
    C{/healthz} again;
  - Kamailio stopped: from SIGSTOP until 2 s after SIGCONT;
  - the loss episode: from the moment the drop rule is in place until 2 s
    after it is removed.

A failed call is B{gateway-caused} when its window overlaps no excused
window: whatever failed it -- a 408 or 5xx answered by the gateway (or
relayed by it), a timeout, an unexpected message -- happened while the
gateway was up, Kamailio ran and the network lost nothing. Prosody's
restart excuses nothing: SIP must never wait on XMPP. An error response
is told apart by its maker: Kamailio's carry its C{Server:
sipxmpp-test-registrar} header, the gateway's none (the UAS never
rejects); the error responses the gateway made itself are also counted
over the whole run, excused or not.

Memory: the gateway's RSS (VmRSS; its anonymous part RssAnon; the
resident part of glibc's main heap, C{[heap]} in C{smaps}) every 5 s. Growth compares the median of the last three samples before quiet
with the median of the three samples after the restarted gateway's
warm-up (0.15 D after its start).

Raw figures are printed: the fault timeline, calls by outcome, sipp's own
failure counters, failures per excused window, convergence per user, RSS
samples. The last line is::

    soak: C calls, F failed (gateway-caused G), stuck S, converge p99 X s, rss growth Y %
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sessions import ProfiledGateway  # noqa: E402  # bench/sessions.py, beside this file

from sipxmpp.testing.demo import Sighting, Watcher  # noqa: E402
from sipxmpp.testing.gateway import GatewayServer  # noqa: E402
from sipxmpp.testing.kamailio import KamailioServer  # noqa: E402
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort  # noqa: E402
from sipxmpp.testing.process import ServerProcess, stopServersOnTerminate  # noqa: E402
from sipxmpp.testing.prosody import ProsodyServer  # noqa: E402
from sipxmpp.testing.sipp import SippProcess, SippRunner  # noqa: E402
from sipxmpp.testing.xmppprobe import login  # noqa: E402

CLIENTS = os.path.join(ROOT, "tests", "integration", "xmppclients.py")
DOMAIN = "example.test"
CONVERGE = 10.0  # seconds of quiet allowed
SETTLE = 2.0  # an excused window lasts this much longer
ABORTED_WINDOW = 40.0  # a call aborted by sipp: INVITE + this
LOSS = 5  # percent of UDP packets dropped in the loss episode
NFT_TABLE = "sipxmpp_soak"
# Where the fault cycles lie, as fractions of the run, and where in its
# slot each fault of a cycle comes (fractions of the slot).
CYCLES_FROM, CYCLES_TO = 0.35, 0.95
PROSODY_AT, KAMAILIO_AT, LOSS_FROM, LOSS_TO = 1 / 12, 1 / 3, 7 / 12, 5 / 6


class SoakError(Exception):
    pass


def log(message: str) -> None:
    print(f"soak: {message}", flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def heapRss(pid: int) -> int:
    """
    The resident part of glibc's main heap (the C{[heap]} mapping, grown by
    brk): Python's own allocator and the threads' arenas map memory apart.
    """
    with open(f"/proc/{pid}/smaps", encoding="ascii") as f:
        inHeap = False
        for line in f:
            if line.rstrip().endswith("[heap]"):
                inHeap = True
            elif inHeap and line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    return 0


def normalStatus(user: str) -> str:
    return f"{user} at the desk"


def password(user: str) -> str:
    return f"{user}-pw"


# -- the network -------------------------------------------------------------


class Loss:
    """
    Drops LOSS % of the UDP packets on this namespace's loopback, by tc
    netem if the kernel has it, else nftables; or cannot (C{how} empty).
    """

    def __init__(self, allowed: bool) -> None:
        self.how = ""
        self.why = "not in a network namespace of the bench's own"
        if not allowed:
            return
        if self._run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "loss", f"{LOSS}%"]):
            self._run(["tc", "qdisc", "del", "dev", "lo", "root"])
            self.how = "tc netem"
        elif self._nft(on=True):
            self._nft(on=False)
            self.how = "nftables (input hook, numgen random)"
        else:
            self.why = "neither tc netem (kernel without sch_netem) nor nft works here"

    @staticmethod
    def _run(args: list[str]) -> bool:
        if shutil.which(args[0]) is None:
            return False
        return subprocess.run(args, capture_output=True, timeout=10, check=False).returncode == 0

    def _nft(self, on: bool) -> bool:
        if not on:
            return self._run(["nft", "delete", "table", "inet", NFT_TABLE])
        return (self._run(["nft", "add", "table", "inet", NFT_TABLE])
                and self._run(["nft", "add", "chain", "inet", NFT_TABLE, "in",
                               "{ type filter hook input priority 0; policy accept; }"])
                and self._run(["nft", "add", "rule", "inet", NFT_TABLE, "in", "meta", "l4proto",
                               "udp", "numgen", "random", "mod", "100", "<", str(LOSS),
                               "counter", "drop"]))

    def start(self) -> None:
        if self.how == "tc netem":
            self._run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "loss", f"{LOSS}%"])
        elif self.how:
            self._nft(on=True)

    def dropped(self) -> str:
        if self.how.startswith("nftables"):
            out = subprocess.run(["nft", "list", "table", "inet", NFT_TABLE],
                                 capture_output=True, text=True, timeout=10, check=False).stdout
            for line in out.splitlines():
                if "counter" in line:
                    return line.split("counter", 1)[1].strip()
        if self.how == "tc netem":
            return subprocess.run(["tc", "-s", "qdisc", "show", "dev", "lo"], capture_output=True,
                                  text=True, timeout=10, check=False).stdout.replace("\n", " ")
        return ""

    def stop(self) -> None:
        if self.how == "tc netem":
            self._run(["tc", "qdisc", "del", "dev", "lo", "root"])
        elif self.how:
            self._nft(on=False)


# -- the users' desktop clients and their watching contact ------------------------


class DesktopClient:
    """
    A user's Psi-style client (XEP-0146) in a subprocess; events read by a
    thread.
    """

    def __init__(self, user: str, prosody: ProsodyServer, logDir: str) -> None:
        self.user = user
        args = [sys.executable, CLIENTS, "--jid", f"{user}@{DOMAIN}/psi",
                "--password", password(user), "--host", prosody.host,
                "--port", str(prosody.port), "--ca-file", prosody.caFile, "--priority", "5",
                "--status", normalStatus(user), "--rc", "psi", "--reconnect",
                "--reconnect-delay", "1.0"]
        self.stderr = open(os.path.join(logDir, f"client-{user}.log"), "ab")
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def count(self, event: str) -> int:
        return sum(1 for e in list(self.events) if e.get("event") == event)

    def stop(self) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "quit"}\n')
            self.process.stdin.flush()
            self.process.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.stderr.close()


class Watch:
    """
    The watching contact; logs in again after Prosody's restart.
    """

    def __init__(self, prosody: ProsodyServer) -> None:
        self.prosody = prosody
        self.watcher: Watcher | None = None
        self.connect()

    def connect(self) -> None:
        probe = login(LOOPBACK, self.prosody.port, DOMAIN, "watcher", password("watcher"),
                      self.prosody.caFile, "watch")
        self.watcher = Watcher(probe)
        probe.sendPresence()
        self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.probe.close()
            self.watcher = None

    def latest(self, full: str) -> Sighting | None:
        assert self.watcher is not None
        return next((s for s in reversed(list(self.watcher.sightings)) if s.jid == full), None)


def converged(watch: Watch, user: str) -> str:
    """
    "" when C{user}'s presence is back to normal, else what is wrong.
    """
    client = watch.latest(f"{user}@{DOMAIN}/psi")
    gateway = watch.latest(f"{user}@{DOMAIN}/sipxmpp")
    if client is None or not client.available:
        return "client absent"
    if client.show == "dnd":
        return f"client dnd {client.status!r}"
    if client.show or client.status != normalStatus(user) or client.priority != 5:
        return f"client status lost: show {client.show!r} status {client.status!r} " \
               f"priority {client.priority}"
    if gateway is not None and gateway.available and gateway.show == "dnd":
        return f"gateway resource dnd {gateway.status!r}"
    return ""


# -- the calls ---------------------------------------------------------------


@dataclass
class Call:
    number: int
    start: float  # wall clock
    outcome: str = "aborted"  # no E line: sipp aborted it
    end: float | None = None

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"

    def window(self) -> tuple[float, float]:
        return self.start, self.end if self.end is not None else self.start + ABORTED_WINDOW


@dataclass
class Timeline:
    #: (name, start, end) wall clock; end None while it lasts
    windows: list[tuple[str, float, float | None]] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.time(), what))
        log(what)

    def open(self, name: str) -> int:
        self.windows.append((name, time.time(), None))
        return len(self.windows) - 1

    def close(self, index: int) -> None:
        name, start, _ = self.windows[index]
        self.windows[index] = (name, start, time.time() + SETTLE)

    def excusedBy(self, call: Call) -> str:
        start, end = call.window()
        for name, wStart, wEnd in self.windows:
            if start <= (wEnd if wEnd is not None else float("inf")) and end >= wStart:
                return name
        return ""


def readCalls(logFile: str) -> dict[int, Call]:
    """
    The calls of soak_uac.xml's log: S and E lines (see the scenario).
    """
    calls: dict[int, Call] = {}
    try:
        with open(logFile, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return calls
    for line in lines:
        parts = line.split()
        if len(parts) < 4 or parts[0] not in ("S", "E") or not parts[1].isdigit():
            continue
        number = int(parts[1])
        try:
            when = float(parts[2]) + float(parts[3]) / 1e6
        except ValueError:
            continue
        if parts[0] == "S":
            calls[number] = Call(number, when)
        elif number in calls and len(parts) >= 5:
            outcome = " ".join(parts[4:6])
            if parts[4] in ("rejected", "bye-rejected"):
                # Kamailio's responses carry its Server header.
                outcome += " by Kamailio" if "registrar" in line else " by the gateway"
            calls[number].outcome = outcome
            calls[number].end = when
    return calls


def sippCounters(statFile: str) -> dict[str, str]:
    """
    sipp's failure counters (cumulative) from the last row of -trace_stat.
    """
    try:
        with open(statFile, encoding="utf-8", errors="replace") as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    wanted = ("SuccessfulCall(C)", "FailedCall(C)", "FailedMaxUDPRetrans(C)",
              "FailedUnexpectedMessage(C)", "FailedCallRejected(C)", "FailedTimeoutOnRecv(C)",
              "FailedTimeoutOnSend(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)",
              "Retransmissions(C)")
    return {name.removesuffix("(C)"): last[header.index(name)]
            for name in wanted if name in header and header.index(name) < len(last)}


# -- the run -----------------------------------------------------------------


def killProsody(prosody: ProsodyServer) -> None:
    process, prosody.process = prosody.process, None
    if process is not None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        ServerProcess._running.discard(prosody)


def run(args: argparse.Namespace, lossAllowed: bool) -> None:
    duration = args.minutes * 60.0
    users = [f"soak{i}" for i in range(args.users)]
    workDir = tempfile.mkdtemp(prefix="sipxmpp-soak-")
    loss = Loss(lossAllowed)
    if loss.how:
        log(f"packet loss by {loss.how}")
    else:
        log(f"packet loss SKIPPED: {loss.why}")
    timeline = Timeline()
    prosody = ProsodyServer(users={**{u: password(u) for u in users},
                                   "watcher": password("watcher")},
                            port=freeTCPPort(), baseDir=os.path.join(workDir, "prosody"))
    for user in users:
        prosody.subscribe(user, "watcher")
    kamailio = KamailioServer(children=2, shmMB=128)
    gateway: GatewayServer | None = None
    clients: list[DesktopClient] = []
    watch: Watch | None = None
    sipp = SippRunner(os.path.join(workDir, "sipp"), timeout=duration + 120)
    uac: SippProcess | None = None
    uas: SippProcess | None = None
    # (seconds since calls began, pid, VmRSS, RssAnon, glibc's main heap;
    # bytes): the anonymous part is the heaps', without the libraries' pages.
    rssSamples: list[tuple[float, int, int, int, int]] = []
    # (when, figures, tracked objects by type) with --allocators.
    allocatorSamples: list[tuple[str, dict[str, int], dict[str, int]]] = []
    capture: subprocess.Popen[bytes] | None = None
    try:
        prosody.start()
        kamailio.start()
        gatewayArgs: dict[str, Any] = dict(
            upstreamPort=kamailio.port, xmppServer=f"{prosody.host}:{prosody.port}",
            caFile=prosody.caFile, baseDir=os.path.join(workDir, "gateway"),
            settings={("log", "level"): "info", ("xmpp", "reconnect_max_delay"): "2"},
        )
        if args.allocators:
            gateway = ProfiledGateway(os.path.join(workDir, "gateway.profile"), **gatewayArgs)
        else:
            gateway = GatewayServer(**gatewayArgs)
        gateway.start()
        for user in users:
            gateway.addAccount(f"sip:{user}@{DOMAIN}", f"{user}@{DOMAIN}", password(user))
        watch = Watch(prosody)
        clients = [DesktopClient(u, prosody, workDir) for u in users]
        deadline = time.monotonic() + 60
        while not all(c.count("ready") for c in clients):
            if time.monotonic() > deadline:
                raise SoakError("the desktop clients did not all log in within 60 s")
            time.sleep(0.2)

        phonePort = freeSIPPort()
        for user in users:
            result = sipp.register(gateway.address, user, DOMAIN, expires=3600,
                                   localPort=phonePort)
            if not result.ok:
                raise SoakError(f"REGISTER {user}: {result.describe()}")
        deadline = time.monotonic() + 60
        while any(watch.latest(f"{u}@{DOMAIN}/sipxmpp") is None for u in users):
            if time.monotonic() > deadline:
                raise SoakError("the gateway's sessions were not all seen within 60 s")
            time.sleep(0.2)
        time.sleep(1.0)  # command discovery of the clients

        inf = os.path.join(workDir, "calls.csv")
        with open(inf, "w", encoding="ascii") as f:
            f.write("SEQUENTIAL\n")
            for i, user in enumerate(users):
                f.write(f"{user};{users[(i + 1) % len(users)]}\n")
        total = max(1, int(args.rate * duration))
        logFile = os.path.join(workDir, "soak_uac.log")
        uas = sipp.start("soak_uas", localPort=phonePort, calls=10**7,
                         timeout=duration + 300)
        uac = sipp.start(
            "soak_uac", gateway.address, keys={"domain": DOMAIN}, calls=total,
            timeout=duration + 120, waitBound=False,
            extraArgs=["-inf", inf, "-r", str(args.rate), "-d", str(args.hold),
                       "-trace_logs", "-log_file", logFile,
                       "-max_invite_retrans", "8", "-max_non_invite_retrans", "12",
                       "-recv_timeout", "40000"],
        )
        began = time.monotonic()
        if args.capture:
            # Every UDP packet on this loopback (what the loss drops too:
            # the capture sees packets before the input hook).
            capture = subprocess.Popen(
                ["dumpcap", "-q", "-i", "lo", "-f", "udp", "-w", os.path.abspath(args.capture)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        timeline.note(f"calls begin: {total} calls at {args.rate:g}/s of {args.hold} ms, "
                      f"{len(users)} users")

        def at(fraction: float) -> float:
            return began + fraction * duration

        def sample() -> None:
            if gateway is not None and gateway.pid is not None:
                try:
                    rssSamples.append((time.monotonic() - began, gateway.pid, rss(gateway.pid),
                                       rss(gateway.pid, "RssAnon"), heapRss(gateway.pid)))
                except (OSError, RuntimeError):
                    pass

        def waitUntil(moment: float) -> None:
            while time.monotonic() < moment:
                if len(rssSamples) == 0 or time.monotonic() - began - rssSamples[-1][0] >= 5:
                    sample()
                time.sleep(min(0.5, max(0.0, moment - time.monotonic())))

        # The faults after the gateway's restart come in args.cycles equal
        # slots between CYCLES_FROM and CYCLES_TO of the run, each at the
        # same place in its slot (with one cycle: at 0.40, 0.55, 0.70-0.85).
        slot = (CYCLES_TO - CYCLES_FROM) / args.cycles
        cycleEnds: list[float] = []

        def inSlot(cycle: int, offset: float) -> float:
            return at(CYCLES_FROM + (cycle + offset) * slot)

        def allocators(label: str) -> None:
            # After a full collection, so that only live memory is counted.
            if isinstance(gateway, ProfiledGateway):
                figures = gateway.allocatorFigures(collect=True)
                allocatorSamples.append((label, figures, gateway.census))

        def faultCycle(cycle: int) -> None:
            tag = f" (cycle {cycle + 1} of {args.cycles})" if args.cycles > 1 else ""
            if cycle == 0:
                waitUntil(inSlot(cycle, PROSODY_AT) - 5)
                allocators("before the cycles")
            waitUntil(inSlot(cycle, PROSODY_AT))
            timeline.note(f"SIGKILL Prosody (pid {prosody.pid}){tag}")
            watch.stop()
            killProsody(prosody)
            prosody.start()
            watch.connect()
            timeline.note("Prosody restarted, same data and port; watcher logged in again")

            waitUntil(inSlot(cycle, KAMAILIO_AT))
            stopped = timeline.open("Kamailio stopped")
            timeline.note(f"SIGSTOP Kamailio for 10 s{tag}")
            assert kamailio.pid is not None
            os.killpg(kamailio.pid, signal.SIGSTOP)
            waitUntil(time.monotonic() + 10)
            os.killpg(kamailio.pid, signal.SIGCONT)
            timeline.close(stopped)
            timeline.note("SIGCONT Kamailio")

            if loss.how:
                waitUntil(inSlot(cycle, LOSS_FROM))
                lossy = timeline.open(f"{LOSS} % UDP loss")
                loss.start()
                timeline.note(f"UDP loss {LOSS} % on ({loss.how}){tag}")
                waitUntil(inSlot(cycle, LOSS_TO))
                dropped = loss.dropped()
                loss.stop()
                timeline.close(lossy)
                timeline.note(f"UDP loss off; dropped: {dropped}")
            elif cycle == 0:
                log("loss episode skipped (see above)")
            waitUntil(inSlot(cycle, 1.0))
            cycleEnds.append(time.monotonic() - began)
            allocators(f"after cycle {cycle + 1}")

        def injectFaults() -> float:
            waitUntil(at(0.15))
            down = timeline.open("gateway down")
            timeline.note(f"SIGKILL gateway (pid {gateway.pid})")
            gateway.kill()
            gateway.start()
            timeline.close(down)
            restarted = time.monotonic() - began
            timeline.note(f"gateway restarted (pid {gateway.pid}), same store and ports")
            for cycle in range(args.cycles):
                faultCycle(cycle)
            return restarted

        restartedAt = 0.0
        if args.faults:
            restartedAt = injectFaults()
        else:
            timeline.note("no faults (--no-faults)")

        # The UAC places its last call at about D; then its calls end.
        while uac.running:
            if time.monotonic() - began > duration + 120:
                timeline.note("the UAC overran its bound: stopped")
                break
            waitUntil(time.monotonic() + 1)
        sample()
        uacResult = uac.stop()
        uasResult = uas.stop()
        quiet = time.monotonic()
        timeline.note(f"quiet: the UAC ended (exit {uacResult.exitCode}), phones stopped")

        # -- convergence --
        # The final state: polled for CONVERGE + 2 s from quiet.
        last: dict[str, str] = {}
        while time.monotonic() < quiet + CONVERGE + 2:
            for user in users:
                last[user] = converged(watch, user)
            time.sleep(0.1)
        calls = readCalls(logFile)
        quietWall = time.time() - (time.monotonic() - quiet)
        lastCall = {u: 0.0 for u in users}
        for call in calls.values():
            row = (call.number - 1) % len(users)
            end = min(call.window()[1], quietWall)
            for user in (users[row], users[(row + 1) % len(users)]):
                lastCall[user] = max(lastCall[user], end)
        wallOffset = time.time() - time.monotonic()
        convergence: dict[str, float | None] = {}
        for user in users:
            assert watch.watcher is not None
            seen = [s.at for s in list(watch.watcher.sightings)
                    if s.jid in (f"{user}@{DOMAIN}/psi", f"{user}@{DOMAIN}/sipxmpp")]
            settled = (max(seen) + wallOffset) if seen else quietWall
            value = max(0.0, settled - lastCall[user])
            if last[user]:
                convergence[user] = None
            elif value > CONVERGE:
                convergence[user] = None
                last[user] = f"converged only {value:.1f} s after its last call"
            else:
                convergence[user] = value

        # -- figures --
        counters = sippCounters(uac._files["stat"])
        outcomes: dict[str, int] = {}
        excused: dict[str, int] = {}
        gatewayCaused: list[Call] = []
        for call in calls.values():
            outcomes[call.outcome] = outcomes.get(call.outcome, 0) + 1
            if call.failed:
                by = timeline.excusedBy(call)
                if by:
                    excused[by] = excused.get(by, 0) + 1
                else:
                    gatewayCaused.append(call)
        placed = len(calls)
        failed = sum(1 for c in calls.values() if c.failed)
        t0 = min((c.start for c in calls.values()), default=time.time())

        print("timeline (seconds since the first call):")
        for when, what in timeline.events:
            print(f"  {when - t0:8.1f}  {what}")
        print("excused windows:")
        for name, wStart, wEnd in timeline.windows:
            print(f"  {name}: {wStart - t0:.1f} .. {(wEnd or wStart) - t0:.1f} s")
        print(f"calls placed: {placed} (offered {total}); by outcome: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
        print("failed calls by excusing window: "
              + (", ".join(f"{k}: {v}" for k, v in sorted(excused.items())) or "none"))
        own = sum(1 for c in calls.values() if c.outcome.endswith("by the gateway"))
        print(f"error responses made by the gateway itself (any window): {own}")
        print(f"failed calls outside every excused window (gateway-caused): {len(gatewayCaused)}")
        for call in gatewayCaused[:20]:
            print(f"  call {call.number} at {call.start - t0:.1f} s: {call.outcome}")
        print("sipp UAC counters: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
        print(f"sipp UAS: exit {uasResult.exitCode}, {uasResult.successful} successful, "
              f"{uasResult.failed} failed")
        print("client logins (ready events, 1 + re-logins): "
              + ", ".join(f"{c.user} {c.count('ready')}" for c in clients))
        print("convergence after each user's last call ended, per user:")
        telephony = {}
        try:
            for user in users:
                telephony[user] = gateway.telephonyState(f"sip:{user}@{DOMAIN}")
        except OSError as e:
            log(f"/status unreadable: {e}")
        for user in users:
            took = convergence[user]
            shown = f"{took:.3f} s" if took is not None else f"STUCK ({last[user]})"
            print(f"  {user}: {shown}; /status telephony {telephony.get(user, '?')}")
        print("gateway RSS samples (s since calls began, pid, MiB: VmRSS, anonymous, "
              "glibc's main heap):")
        for when, pid, value, anonymous, mainHeap in rssSamples:
            print(f"  {when:7.1f}  {pid}  {value / 2**20:.1f}  {anonymous / 2**20:.1f}  "
                  f"{mainHeap / 2**20:.2f}")

        final = [s for s in rssSamples if s[0] >= restartedAt]
        if len(cycleEnds) > 1:
            # Each cycle's quiet tail (after its loss episode): whether the
            # faults' steps add up or stay one high-water mark.
            print("gateway RSS at the end of each fault cycle (median of its last "
                  f"{(1 - LOSS_TO) * 100:.0f} % of the slot; MiB: VmRSS, anonymous, "
                  "glibc's main heap):")
            for number, end in enumerate(cycleEnds, 1):
                tail = [s for s in final
                        if end - (1 - LOSS_TO) * slot * duration + SETTLE <= s[0] <= end]
                if tail:
                    print(f"  cycle {number} ({end:.0f} s): "
                          f"{statistics.median(s[2] for s in tail) / 2**20:.1f}  "
                          f"{statistics.median(s[3] for s in tail) / 2**20:.1f}  "
                          f"{statistics.median(s[4] for s in tail) / 2**20:.2f}")
        if allocatorSamples:
            print("gateway allocators after a full collection (KiB: malloc in use, malloc "
                  "free; CPython's objects, free in its pools; objects the collector tracks, "
                  "start-up's being frozen):")
            for label, f, _ in allocatorSamples:
                print(f"  {label}: {f['used'] // 1024}  {f['free'] // 1024};  "
                      f"{f['pyUsed'] // 1024}  {f['pyFree'] // 1024};  {f['objects']}")
            censuses = [census for _, _, census in allocatorSamples]
            first, last = censuses[0], censuses[-1]
            grown = sorted(((last.get(k, 0) - first.get(k, 0), k) for k in last), reverse=True)
            print("tracked objects by type, more at the last than at the first (count: "
                  "each sample): " + (", ".join(
                      f"{k} " + "/".join(str(c.get(k, 0)) for c in censuses)
                      for n, k in grown[:12] if n > 0) or "none"))
        warm = restartedAt + 0.15 * duration
        after = [s[2] for s in final if s[0] >= warm]
        anon = [s[3] for s in final if s[0] >= warm]
        heap = [s[4] for s in final if s[0] >= warm]
        growth = 0.0
        if len(after) >= 4:
            baseline = statistics.median(after[:3])
            end = statistics.median(after[-3:])
            growth = 100 * (end - baseline) / baseline
            print(f"RSS of the restarted gateway: {baseline / 2**20:.1f} MiB after warm-up "
                  f"({warm:.0f} s), {end / 2**20:.1f} MiB at the end; anonymous "
                  f"{statistics.median(anon[:3]) / 2**20:.1f} -> "
                  f"{statistics.median(anon[-3:]) / 2**20:.1f} MiB, glibc's main heap "
                  f"{statistics.median(heap[:3]) / 2**20:.2f} -> "
                  f"{statistics.median(heap[-3:]) / 2**20:.2f} MiB")
        else:
            print("RSS: too few samples after warm-up for a growth figure (0 printed)")
        stuck = sum(1 for v in convergence.values() if v is None)
        times = [v for v in convergence.values() if v is not None]
        p99 = percentile(times, 99) if times else float("nan")
        if not loss.how:
            print(f"note: no packet loss was injected ({loss.why})")
        print(f"soak: {placed} calls, {failed} failed (gateway-caused {len(gatewayCaused)}), "
              f"stuck {stuck}, converge p99 {p99:.2f} s, rss growth {growth:.1f} %", flush=True)
    finally:
        if capture is not None:
            capture.terminate()
            capture.wait(10)
        loss.stop()
        if kamailio.pid is not None:
            try:
                os.killpg(kamailio.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        sipp.stopAll()
        if watch is not None:
            watch.stop()
        for client in clients:
            client.stop()
        for server in (gateway, kamailio, prosody):
            if server is not None:
                server.stop()
        if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            shutil.rmtree(workDir, ignore_errors=True)
        else:
            log(f"files kept in {workDir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="how long calls are placed (default 10)")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="calls per second (default 2)")
    parser.add_argument("--users", type=int, default=6,
                        help="users, each with a desktop client (default 6)")
    parser.add_argument("--hold", type=int, default=3000,
                        help="length of a call, ms (default 3000)")
    parser.add_argument("--cycles", type=int, default=1,
                        help="repeat the Prosody, Kamailio and loss faults this many "
                             "times (default 1)")
    parser.add_argument("--allocators", action="store_true",
                        help="the gateway's malloc and CPython allocators and its tracked "
                             "objects before the fault cycles and after each (a full "
                             "collection first)")
    parser.add_argument("--capture", metavar="FILE", default="",
                        help="write the UDP packets on the soak's loopback to FILE "
                             "(pcapng, dumpcap from Debian's tshark)")
    parser.add_argument("--no-faults", dest="faults", action="store_false",
                        help="inject no faults: calls only (for memory probes)")
    parser.add_argument("--inside", action="store_true",
                        help="(internal) already in the bench's own network namespace")
    args = parser.parse_args()
    if args.users < 2:
        parser.error("--users must be at least 2")
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    if not args.inside:
        if os.geteuid() == 0 and shutil.which("unshare") is not None:
            os.execvp("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__),
                                  "--inside", *sys.argv[1:]])
        log("not root or no unshare: running on the host's loopback")
    elif subprocess.run(["ip", "link", "set", "lo", "up"], check=False).returncode != 0:
        raise SystemExit("soak: cannot bring up lo in the namespace")
    try:
        run(args, lossAllowed=args.inside)
    except SoakError as e:
        raise SystemExit(f"soak: {e}") from None


if __name__ == "__main__":
    stopServersOnTerminate()
    main()
