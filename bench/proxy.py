"""
Benchmark: calls per second through the sipxmpp gateway against Kamailio.

Run from the repository root::

    .venv/bin/python bench/proxy.py [--steps 50,100,...] [--seconds S]
                                    [--bindings N] [--dialogs M] [--profile]
                                    [--workers auto|N]
    .venv/bin/python bench/proxy.py --inprocess-only [--bindings N] [--dialogs M]

Everything runs on 127.0.0.1. One Kamailio (etc/kamailio.cfg: stateful
C{t_relay}, 2 worker processes per socket) is the registrar; one gateway
(the whole pipeline: transactions, proxy, observer, telephony state, with
the production log level C{info}, with C{[sip] workers} as C{--workers}
says: by default C{auto}, one SIP worker process per core) sits in front
of it. One sipp UAS
(C{uas.xml}: 180, 200 with SDP, ACK, BYE) is registered twice from the
same port: as C{callee-gw} through the gateway and as C{callee-k} directly
at Kamailio. The same sipp UAC (INVITE, ACK, BYE over UDP, no hold) then
calls, at each rate of the ramp:

  - sipxmpp: caller -> gateway -> Kamailio -> gateway (the callee's Path)
    -> UAS: the call spirals, the gateway handles both legs and the
    telephony state of caller and callee (both users are ours);
  - outbound: caller -> gateway -> Kamailio -> UAS (registered at Kamailio
    directly): one leg through the gateway, as for a call to a user who is
    not ours; printed for comparison, hop for hop, with Kamailio's;
  - kamailio: caller -> Kamailio -> UAS.

The UAC is the tests' C{uac.xml}; the UAS (C{proxy_bench_ramp_uas.xml})
is their C{uas.xml} with two allowances for what a proxy with several
workers does to back-to-back UDP messages (Kamailio's two may pass them
in the other order): it sends the 200 OK 10 ms after the 180 rather than
right behind it, and lets the BYE overtake the ACK. Counted as failures,
those reorders decided the figures, mostly Kamailio's (a late 180 or an
early BYE failed its 300 cps step in one run); a call still fails on any
timeout, error response or other unexpected message.

Each step offers C{--seconds} worth of calls (at least 200) at its rate;
a step passes when fewer than 0.1 % of them failed or did not finish, and
at least 90 % of the offered rate was achieved (successful calls over the
step's wall time: a system that only queues the calls, finishing them
seconds late, has not kept up with the rate). A
failing step is run once more after a pause (the machine may be shared;
both runs are printed), and the ramp of a system stops when the retry
fails too. Its figure is the highest passing rate.

During each step the user and system CPU of the gateway (its whole
process tree: the main process and its SIP workers, each also on its
own), of Kamailio's whole process tree and of sipp (UAS and the step's
UAC) are read from /proc; at the highest rate every ramp passed, each one's CPU per call is
printed, and Kamailio's over the gateway's for one hop: the throughput
ratio on equal cores, were CPU the only limit (Kamailio's two workers use
both cores, the gateway one). From the same figures, what a ratio of 0.5
leaves the gateway per spiralled call: one core's worth at half
Kamailio's rate, and no more than the machine's cores less Kamailio's and
sipp's CPU for those calls (an estimate: CPU per call falls as the rate
rises and datagrams batch).

Memory, on a fresh gateway of its own: its RSS (C{/proc/PID/status}
VmRSS) before and after C{--bindings} users registered through it
(200/s), and while C{--dialogs} calls from distinct callers are up (set
up at 50/s). Twice: the first round also warms the process up and counts
the transactions still alive (64*T1 = 32 s each); the second, with new
users once those transactions have ended, shows what bindings and
dialogs keep (CPython reuses the memory the first round's transactions
freed).

With C{--profile}, a second gateway runs under cProfile (twistd
C{--profile}) for one step at the sipxmpp figure and the functions with
the most own time are printed.

Last, the floor of the stack (bench/floor.py): the CPU a Twisted UDP
relay doing no SIP work spends per datagram, times the messages the
gateway received per call in each ramp, is what a call costs one reactor
before any SIP work; one core's worth of it is the most calls/s a
single-reactor Python proxy could reach here, printed beside Kamailio's:
once for datagrams that come in bursts (a saturated reactor, which wakes
once for many) and once for datagrams that come one at a time (each wakes
it; four to seven times dearer here).

With C{--inprocess}, first the pipeline in-process (no sockets: see
L{inProcess}); C{--inprocess-only} prints that alone and stops.

The last line is always (but for C{--inprocess-only})::

    proxy cps ratio sipxmpp/kamailio: R (sipxmpp N cps, kamailio M cps)
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import operator
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from twisted.internet.task import Clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from floor import ONE_BY_ONE, relayCost  # bench/floor.py, beside this file

from sipxmpp.ops.metrics import Metrics
from sipxmpp.processes.gctuning import tuneGarbageCollector
from sipxmpp.sip.core.observer import TelephonyObserver
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.proxy import Proxy, ProxySettings
from sipxmpp.sip.core.timers import TimerQueue
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.parser import parseMessage
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.store.addresses import aorOfURI
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioServer
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeSIPPortRange
from sipxmpp.testing.process import stopServersOnTerminate
from sipxmpp.testing.sipp import SippProcess, SippRunner

DOMAIN = "example.test"
FAILURE_LIMIT = 0.001  # < 0.1 % failed calls
KEPT_UP = 0.9  # and at least 90 % of the offered rate achieved
MIN_CALLS = 200
# How the UAC sends: one socket for all calls ("u1"), or with several SIP
# workers one per call ("un", set in main): the kernel hashes each source
# to one worker, and a single socket would give every call to one. All
# three ramps use the same, so Kamailio's figure is measured alike.
CALLER_TRANSPORT = "u1"


class ProfiledGateway(GatewayServer):
    """
    The gateway under twistd's cProfile; stats are saved when it stops.
    """

    def __init__(self, profileFile: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.profileFile = profileFile

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("-n")
        return [*command[: at + 1], f"--profile={self.profileFile}", "--profiler=cprofile",
                "--savestats", *command[at + 1 :]]


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    seconds: float
    #: user and system CPU seconds each watched process spent in the step
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        return self.calls - self.successful - self.failed

    @property
    def failureRatio(self) -> float:
        return (self.calls - self.successful) / self.calls

    @property
    def achieved(self) -> float:
        return self.successful / self.seconds

    @property
    def passed(self) -> bool:
        return self.failureRatio < FAILURE_LIMIT and self.achieved >= KEPT_UP * self.rate

    def msPerCall(self, process: str) -> float:
        """
        The user + system CPU milliseconds C{process} spent per successful
        call of the step.
        """
        user, system = self.cpu.get(process, (0.0, 0.0))
        return 1000 * (user + system) / max(self.successful, 1)

    def describe(self) -> str:
        return (f"{self.rate:5d} cps offered: {self.calls:6d} calls, {self.successful:6d} ok, "
                f"{self.failed:5d} failed, {self.unfinished:5d} unfinished "
                f"({100 * self.failureRatio:.2f} %) in {self.seconds:5.1f} s "
                f"= {self.achieved:7.1f} cps achieved  "
                f"{'pass' if self.passed else 'FAIL'}")


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, bytes.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _stat(pid: int) -> list[str]:
    """
    The fields of C{/proc/PID/stat} after the command name (state first).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()


def cpuTimes(pid: int) -> tuple[float, float]:
    """
    User and system CPU seconds of process C{pid} itself.
    """
    fields = _stat(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def treeCPU(pid: int) -> tuple[float, float]:
    """
    User and system CPU seconds of process C{pid} and its live children
    (Kamailio's workers, timer and TCP processes).
    """
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat(int(entry))[1]) == pid:
                    pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # ended meanwhile
    user = system = 0.0
    for each in pids:
        try:
            u, s = cpuTimes(each)
        except OSError:
            continue
        user += u
        system += s
    return user, system


def samples(metrics: str) -> Iterator[tuple[str, float]]:
    """
    The samples of a C{/metrics} page: name with its labels, and value.
    """
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            yield name, float(value)


def collectorSummary(metrics: str) -> str:
    """
    The gateway's garbage collections and pauses so far, from C{/metrics}.
    """
    count: dict[str, float] = {}
    pause: dict[str, float] = {}
    longest = 0.0
    for name, value in samples(metrics):
        if name.startswith("sipxmpp_gc_collections_total"):
            count[name.split('"')[1]] = value
        elif name.startswith("sipxmpp_gc_pause_seconds_total"):
            pause[name.split('"')[1]] = value
        elif name == "sipxmpp_gc_longest_pause_seconds":
            longest = value
    each = ", ".join(f"gen{g} {count[g]:.0f} in {pause.get(g, 0):.2f} s" for g in sorted(count))
    return f"GC collections: {each or 'none'}; longest {1000 * longest:.0f} ms"


def messagesReceived(metrics: str) -> float:
    """
    The SIP messages the gateway has received so far, from C{/metrics}.
    """
    return sum(value for name, value in samples(metrics)
               if name.startswith("sipxmpp_sip_messages_received_total"))


def waitUntil(what: str, probe: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/proxy.py: timed out waiting for {what}")
        time.sleep(0.1)


Watch = dict[str, Callable[[], tuple[float, float]]]


def runStep(sipp: SippRunner, target: str, callee: str, rate: int, seconds: float,
            watch: Watch | None = None) -> Step:
    calls = max(MIN_CALLS, int(rate * seconds))
    watch = watch or {}
    before = {name: probe() for name, probe in watch.items()}
    started = time.monotonic()
    result = sipp.run(
        "uac", target, service=callee, keys={"domain": DOMAIN, "caller": "bench-caller"},
        calls=calls, timeout=calls / rate + 10,
        extraArgs=["-r", str(rate), "-l", str(calls), "-d", "0",
                   # Below the open-file limit, which sipp otherwise refuses.
                   *(["-max_socket", "10000"] if CALLER_TRANSPORT == "un" else [])],
        transport=CALLER_TRANSPORT,
    )
    elapsed = time.monotonic() - started
    cpu = {}
    for name, probe in watch.items():
        user, system = probe()
        cpu[name] = (user - before[name][0], system - before[name][1])
    return Step(rate, calls, result.successful or 0, result.failed or 0, elapsed, cpu)


def ramp(name: str, sipp: SippRunner, target: str, callee: str, rates: list[int],
         seconds: float, settle: object = None, watch: Watch | None = None
         ) -> tuple[int, list[Step]]:
    best = 0
    steps = []
    for rate in rates:
        step = runStep(sipp, target, callee, rate, seconds, watch)
        steps.append(step)
        print(f"  {name:8s} {step.describe()}", flush=True)
        if not step.passed:
            # The machine is shared: one retry, after a pause; both shown.
            time.sleep(3.0)
            step = runStep(sipp, target, callee, rate, seconds, watch)
            steps.append(step)
            print(f"  {name:8s} {step.describe()} (retry)", flush=True)
        if not step.passed:
            break
        best = rate
        if settle is not None:
            settle()  # type: ignore[operator]
    return best, steps


@contextmanager
def started(stack: ExitStack, server: GatewayServer | KamailioServer) -> Iterator[None]:
    stack.callback(server.stop)
    server.start()
    yield


def register(sipp: SippRunner, target: str, user: str, port: int) -> None:
    result = sipp.register(target, user, expires=3600, localPort=port)
    if not result.ok:
        raise SystemExit(f"bench/proxy.py: cannot register {user}: {result.describe()}")


def measureMemory(kamailio: KamailioServer, sipp: SippRunner, uas: SippProcess,
                  bindings: int, dialogs: int) -> None:
    """
    RSS per binding and per dialog on a gateway of its own: a first round
    (bindings and dialogs, which also warms the process up) and, once its
    transactions have ended, a second round of new users, whose growth is
    what bindings and dialogs keep (their own transactions reuse the memory
    the first round's freed).
    """
    gw = GatewayServer(upstreamPort=kamailio.port, settings={("log", "level"): "info"})
    try:
        gw.start()
        uas.stop()
        register(sipp, gw.address, "callee-gw", uas.port)
        uas = startUAS(sipp, uas.port)
        for round in ("first", "second"):
            if round == "second":
                drained = time.monotonic()
                waitUntil("the first round's transactions to end",
                          lambda: int(gw.status()["sip"]["transactions"]) < 10,  # type: ignore[index]
                          60)
                print(f"  (waited {time.monotonic() - drained:.0f} s for the first round's "
                      "transactions to end)")
            _memoryRound(gw, sipp, round, bindings, dialogs)
    finally:
        gw.stop()
        uas.stop()


def _memoryRound(gw: GatewayServer, sipp: SippRunner, round: str, bindings: int,
                 dialogs: int) -> None:
    pid = gw.pid
    assert pid is not None

    def sipCount(key: str) -> int:
        return int(gw.status()["sip"][key])  # type: ignore[index]

    before = rss(pid)
    baseBindings = sipCount("bindings")
    result = sipp.run("proxy_bench_register", gw.address, service=f"{round}-user",
                      keys={"domain": DOMAIN, "expires": 3600}, calls=bindings,
                      timeout=bindings / 200 + 20, extraArgs=["-r", "200", "-l", "200"])
    if result.successful != bindings:
        raise SystemExit(f"bench/proxy.py: registering {bindings} users: {result.describe()}")
    waitUntil("the bindings", lambda: sipCount("bindings") >= baseBindings + bindings, 20)
    after = rss(pid)
    print(f"  {round} round: RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB with "
          f"{bindings} more bindings ({sipCount('transactions')} transactions alive): "
          f"{(after - before) / bindings:.0f} bytes per binding")

    def onThePhone() -> int:
        users = gw.status()["users"]
        assert isinstance(users, dict)
        return sum(1 for u in users.values() if u["telephony"] == "on-the-phone")

    before = rss(pid)
    # Slowly (each call spirals through the gateway), held until all are up.
    rate = 50
    hold = int(dialogs / rate * 1000 + 3000)
    call = sipp.start("proxy_bench_uac", gw.address, service="callee-gw",
                      keys={"domain": DOMAIN, "caller": f"{round}-caller"}, calls=dialogs,
                      timeout=hold / 1000 + 30,
                      extraArgs=["-r", str(rate), "-l", str(dialogs), "-d", str(hold)],
                      waitBound=False)
    # Every caller plus the one callee is on the phone.
    waitUntil("the dialogs", lambda: onThePhone() >= dialogs + 1, dialogs / rate + 20)
    during = rss(pid)
    print(f"  {round} round: RSS {before / 2**20:.1f} -> {during / 2**20:.1f} MiB with "
          f"{dialogs} dialogs up ({sipCount('transactions')} transactions alive): "
          f"{(during - before) / dialogs:.0f} bytes per dialog")
    result = call.wait(hold / 1000 + 40)
    if result.successful != dialogs:
        print(f"  (warning: {result.successful} of {dialogs} held calls completed)")


def sippCPU(uas: SippProcess) -> Callable[[], tuple[float, float]]:
    """
    A probe of sipp's user and system CPU seconds: the UAS's so far plus
    those of this process's reaped children, which during a ramp are the
    steps' UACs, each counted once it has ended (as it has when its step
    is read).
    """
    def probe() -> tuple[float, float]:
        user, system = cpuTimes(uas.pid)
        times = os.times()
        return user + times.children_user, system + times.children_system
    return probe


def gatewayWorkers(gateway: GatewayServer, count: int) -> list[int]:
    """
    The pids of the gateway's SIP workers, once all are connected; none
    with SIP in the main process.
    """
    if count == 1:
        return []

    def connected() -> list[int] | None:
        workers = gateway.status()["sip"]["workers"]  # type: ignore[index]
        return [w["pid"] for w in workers] if all(w["connected"] for w in workers) else None

    deadline = time.monotonic() + 30
    while (pids := connected()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway's SIP workers did not all connect")
        time.sleep(0.2)
    return pids


def cpuPerCall(ramps: dict[str, list[Step]]) -> None:
    """
    Print what each process spent per call at the highest rate every ramp
    passed: CPU per call does not depend on how many cores a system may
    use, so gateway against Kamailio there is hop for hop, core for core.
    """
    passed = [{s.rate for s in steps if s.passed} for steps in ramps.values()]
    common = set.intersection(*passed) if passed else set()
    if not common:
        print("CPU per call: no rate that every ramp passed")
        return
    rate = max(common)
    print(f"CPU per call at {rate} cps (the highest rate every ramp passed), "
          "user + system:")
    figures: dict[tuple[str, str], float] = {}
    for name, steps in ramps.items():
        step = next(s for s in steps if s.rate == rate and s.passed)
        parts = []
        each = 1000 / step.successful  # ms per call, per CPU second
        for process, (user, system) in step.cpu.items():
            figures[name, process] = step.msPerCall(process)
            parts.append(f"{process} {figures[name, process]:.3f} ms "
                         f"({user * each:.3f} + {system * each:.3f})")
        print(f"  {name:8s} " + ", ".join(parts))
    kamailio = figures.get(("kamailio", "kamailio"))
    oneLeg = figures.get(("outbound", "gateway"))
    if kamailio and oneLeg:
        print(f"  one hop: kamailio/gateway CPU per call {kamailio / oneLeg:.2f} "
              f"(the cps ratio on equal cores, were CPU the only limit)")


def budget(ramps: dict[str, list[Step]], kam: int, ratio: float = 0.5) -> None:
    """
    Print the most CPU per spiralled call the gateway could spend at
    C{ratio} times Kamailio's cps: one core's worth (one reactor), and no
    more than the machine's cores leave once Kamailio and sipp have done
    their part of those calls, which is taken from Kamailio's own ramp at
    that rate (the same sipp calls, the same hop through Kamailio). The
    gateway's own figure is from its highest passing rate, where it was
    cheapest per call (datagrams batch as the rate rises).
    """
    target = ratio * kam
    ours = [s for s in ramps.get("sipxmpp", []) if s.passed]
    theirs = [s for s in ramps.get("kamailio", []) if s.passed and s.rate >= target]
    if not (ours and theirs):
        print(f"ratio {ratio:g}: no figures for the gateway's CPU budget")
        return
    best = max(ours, key=lambda s: s.rate)
    peer = min(theirs, key=lambda s: s.rate)
    others = peer.msPerCall("kamailio") + peer.msPerCall("sipp")
    cores = os.cpu_count() or 1
    oneCore = 1000 / target
    leftOver = max(0.0, cores - target * others / 1000) * 1000 / target
    allowed = min(oneCore, leftOver)
    gateway = best.msPerCall("gateway")
    over = f"{gateway / allowed:.1f} times that" if allowed else "with nothing left for it"
    print(f"ratio {ratio:g} = {target:.0f} spiralled cps: the gateway could spend at most "
          f"{allowed:.3f} ms of CPU per call (one core: {oneCore:.3f} ms; the {cores} cores "
          f"less Kamailio's and sipp's {others:.3f} ms per call at {peer.rate} cps in "
          f"Kamailio's ramp: {leftOver:.3f} ms); it spent {gateway:.3f} ms at {best.rate} "
          f"cps, its highest passing rate: {over}")


def startUAS(sipp: SippRunner, port: int) -> SippProcess:
    return sipp.start("proxy_bench_ramp_uas", service="callee", localPort=port, calls=10**8, timeout=3600)


def profile(kamailio: KamailioServer, sipp: SippRunner, uas: SippProcess, rate: int,
            seconds: float, workDir: str) -> None:
    profileFile = os.path.join(workDir, "gateway.cprofile")
    gw = ProfiledGateway(profileFile, upstreamPort=kamailio.port,
                         settings={("log", "level"): "info"})
    try:
        gw.start()
        # The callee registers from the UAS's port, through this gateway.
        uas.stop()
        register(sipp, gw.address, "callee-gw", uas.port)
        startUAS(sipp, uas.port)
        step = runStep(sipp, gw.address, "callee-gw", rate, seconds)
        print(f"  profiled {step.describe()}")
    finally:
        gw.stop()
    stats = pstats.Stats(profileFile)
    entries = stats.stats  # type: ignore[attr-defined]
    # cProfile measures wall time: waiting in epoll (idle, or runnable but
    # not scheduled) is not work; the rest is the gateway's own time.
    idle = sum(own for (_, _, function), (_, _, own, _, _) in entries.items()
               if "poll" in function and "epoll" in function)
    busy = stats.total_tt - idle  # type: ignore[attr-defined]
    print(f"gateway profile at {rate} cps under cProfile: {busy:.1f} s busy, {idle:.1f} s "
          "in epoll; top functions by own time (% of busy):")
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in entries.items():
        if "poll" in function and "epoll" in function:
            continue
        rows.append((own, cumulative, calls, f"{os.path.basename(filename)}:{line}({function})"))
    for own, cumulative, calls, where in sorted(rows, reverse=True)[:20]:
        print(f"  {100 * own / busy:5.1f} % own {100 * cumulative / busy:5.1f} % cum "
              f"{calls:8d} calls  {where}")
    print("  by stage (cumulative, % of busy):")
    stages = [
        ("receive: parse", "message.py", "parseMessage"),
        ("proxy: requests", "proxy.py", "_requestReceived"),
        ("proxy: responses", "proxy.py", "_responseReceived"),
        ("observer + state + publisher", "proxy.py", "_notify"),
        ("state machine", "state.py", "_update"),
        ("serialise", "message.py", "toBytes"),
        ("send (sendto)", "transport.py", "send"),
        ("timers (callLater)", "base.py", "callLater"),
        ("timers fired", "base.py", "runUntilCurrent"),
    ]
    for label, file, function in stages:
        cumulative = sum(cum for (f, _, fn), (_, _, _, cum, _) in entries.items()
                         if f.endswith(file) and fn == function)
        print(f"    {100 * cumulative / busy:5.1f} %  {label}")


# --- in-process: the SIP pipeline without sockets ------------------------
#
# The gateway's proxy, observer and state machine fed by a scripted peer
# (phones, a registrar that follows the Path, a callee), on a virtual
# clock: no kernel, no sipp, no other process competing. Exact Python heap
# figures (tracemalloc) and CPU per call, for --inprocess.

GW = Peer("UDP", "127.0.0.1", 5060)
UP = Peer("UDP", "127.0.0.1", 5070)
A = Peer("UDP", "127.0.0.1", 6001)
B = Peer("UDP", "127.0.0.1", 6002)
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Pipeline:
    """The gateway's SIP pipeline without sockets: proxy, observer, state."""

    def __init__(self) -> None:
        # The proxy on a TimerQueue as in the gateway. The state machine's
        # timers go on the reactor's heap there; here on a second queue
        # (Clock sorts its whole list on every callLater), so Clock's list
        # holds two calls at most.
        self.clock = Clock()
        # Read like the reactor's clock, a C function (time.time), not
        # through Clock.seconds, a Python method: its calls (about 40 per
        # call) were the bench's, not the gateway's.
        self.clock.seconds = functools.partial(operator.attrgetter("rightNow"), self.clock)  # type: ignore[method-assign]
        self.machine = TelephonyStateMachine(TimerQueue(self.clock))
        self.outbox: list[tuple[bytes, Peer]] = []
        self.proxy = Proxy(TimerQueue(self.clock), ProxySettings({"UDP": GW}, UP, (ipaddress.ip_network("127.0.0.0/8"),)),
                           lambda data, peer: self.outbox.append((data, peer)), aorOfURI, Metrics())
        self.proxy.addObserver(TelephonyObserver(self.machine, aorOfURI))
        self.n = 0

    gatewayCPU = 0.0

    def deliver(self, data: bytes, source: Peer) -> None:
        t = time.process_time()
        self.proxy.messageReceived(parseMessage(data), source)
        Pipeline.gatewayCPU += time.process_time() - t

    def tick(self, amount: float) -> None:
        t = time.process_time()
        self.clock.advance(amount)
        Pipeline.gatewayCPU += time.process_time() - t

    def take(self, to: Peer) -> SIPRequest | SIPResponse:
        found = [d for d, p in self.outbox if p == to]
        self.outbox.clear()
        messages = [parseMessage(d) for d in found]
        messages = [m for m in messages if not (isinstance(m, SIPResponse) and m.code == 100)]
        assert len(messages) == 1, (to, messages)
        return messages[0]

    def register(self, user: str, phone: Peer) -> None:
        self.deliver((
            f"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP {phone.host}:{phone.port};branch=z9hG4bKr{user};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@example.test>;tag=r{user}\r\nTo: <sip:{user}@example.test>\r\n"
            f"Call-ID: reg-{user}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{phone.host}:{phone.port}>\r\n"
            "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode(), phone)
        forwarded = self.take(UP)
        assert isinstance(forwarded, SIPRequest)
        ok = makeResponse(forwarded, 200, headers=[("Contact", f"<sip:{user}@{phone.host}:{phone.port}>;expires=3600")])
        self.deliver(ok.toBytes(), UP)
        self.take(phone)

    def upstreamForwards(self, request: SIPRequest, branch: str, uri: str | None = None,
                         recordRoute: bool = False) -> bytes:
        # The registrar: its Via, its own Route entry popped, Path as Route.
        request.prependVia(f"SIP/2.0/UDP {UP.host}:{UP.port};branch=z9hG4bKk{branch}")
        if uri is not None:
            request.setURI(uri)
            request.addHeader("Route", f"<sip:{GW.host}:{GW.port};lr>", first=True)
        else:
            request.popRoute()
        if recordRoute:
            request.addRecordRoute(f"<sip:{UP.host}:{UP.port};lr>")
        return request.toBytes()

    def upstreamReturns(self, response: SIPResponse) -> bytes:
        response.popVia()
        return response.toBytes()

    def call(self) -> None:
        self.n += 1
        n = self.n
        invite = (
            f"INVITE sip:callee@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {A.host}:{A.port};branch=z9hG4bKa{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@example.test>;tag=a{n}\r\nTo: <sip:callee@example.test>\r\n"
            f"Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{A.host}:{A.port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n").encode() + SDP
        self.deliver(invite, A)
        toUp = self.take(UP)
        assert isinstance(toUp, SIPRequest)
        self.deliver(makeResponse(toUp, 100).toBytes(), UP)
        self.deliver(self.upstreamForwards(toUp, f"{n}i", f"sip:callee@{B.host}:{B.port}", True), UP)
        toB = self.take(B)
        assert isinstance(toB, SIPRequest)
        rr = [("Record-Route", v) for v in toB.getHeaderValues("Record-Route")]
        contact = [("Contact", f"<sip:callee@{B.host}:{B.port}>")]
        for code, body in ((180, b""), (200, SDP)):
            response = makeResponse(toB, code, toTag=f"b{n}", headers=rr + contact, body=body,
                                    contentType="application/sdp" if body else None)
            self.deliver(response.toBytes(), B)
            back = self.take(UP)
            assert isinstance(back, SIPResponse)
            self.deliver(self.upstreamReturns(back), UP)
            atA = self.take(A)
            assert isinstance(atA, SIPResponse) and atA.code == code, atA
        routes = "".join(f"Route: {v}\r\n" for v in reversed(atA.getHeaderValues("Record-Route")))
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            request = (
                f"{method} sip:callee@{B.host}:{B.port} SIP/2.0\r\nVia: SIP/2.0/UDP {A.host}:{A.port};branch=z9hG4bKa{n}{method}\r\n"
                f"{routes}Max-Forwards: 70\r\nFrom: <sip:caller@example.test>;tag=a{n}\r\nTo: <sip:callee@example.test>;tag=b{n}\r\n"
                f"Call-ID: call-{n}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()
            self.deliver(request, A)
            toUp = self.take(UP)
            assert isinstance(toUp, SIPRequest)
            self.deliver(self.upstreamForwards(toUp, f"{n}{method}"), UP)
            toB = self.take(B)
            assert isinstance(toB, SIPRequest) and toB.method == method
            if method == "BYE":
                self.deliver(makeResponse(toB, 200).toBytes(), B)
                back = self.take(UP)
                assert isinstance(back, SIPResponse)
                self.deliver(self.upstreamReturns(back), UP)
                atA = self.take(A)
                assert isinstance(atA, SIPResponse) and atA.code == 200



def openCall(p: Pipeline, n: int) -> None:
    """
    A spiralled call from caller-N to callee, answered and ACKed, left up.
    """
    invite = (
        f"INVITE sip:callee@example.test SIP/2.0\r\nVia: SIP/2.0/UDP {A.host}:{A.port};branch=z9hG4bKd{n}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:caller{n}@example.test>;tag=d{n}\r\nTo: <sip:callee@example.test>\r\n"
        f"Call-ID: dlg-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller{n}@{A.host}:{A.port}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n").encode() + SDP
    p.deliver(invite, A)
    toUp = p.take(UP)
    assert isinstance(toUp, SIPRequest)
    p.deliver(p.upstreamForwards(toUp, f"d{n}", f"sip:callee@{B.host}:{B.port}", True), UP)
    toB = p.take(B)
    assert isinstance(toB, SIPRequest)
    rr = [("Record-Route", v) for v in toB.getHeaderValues("Record-Route")]
    ok = makeResponse(toB, 200, toTag=f"e{n}",
                      headers=rr + [("Contact", f"<sip:callee@{B.host}:{B.port}>")],
                      body=SDP, contentType="application/sdp")
    p.deliver(ok.toBytes(), B)
    back = p.take(UP)
    assert isinstance(back, SIPResponse)
    p.deliver(p.upstreamReturns(back), UP)
    p.take(A)


def inProcess(calls: int, bindings: int, dialogs: int) -> None:
    import gc
    import tracemalloc

    p = Pipeline()
    p.register("callee", B)
    p.register("caller", A)
    # As the gateway does at start-up (sipxmpp.processes.gctuning.tuneGarbageCollector).
    tuneGarbageCollector()
    for _ in range(calls):  # to steady state: 32 s of transactions alive
        p.call()
        p.tick(0.01)
    gcTime = [0.0, 0.0]

    def timeGC(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gcTime[1] = time.process_time()
        else:
            gcTime[0] += time.process_time() - gcTime[1]

    gc.callbacks.append(timeGC)
    Pipeline.gatewayCPU = 0.0
    started = time.process_time()
    for _ in range(calls):
        p.call()
        p.tick(0.01)
    total = time.process_time() - started
    gc.callbacks.remove(timeGC)
    gc.collect()
    tracked = len(gc.get_objects())  # start-up objects are frozen: not counted
    alive = p.proxy.activeTransactions
    print(f"in-process, {calls} spiralled calls at a virtual 100 cps (steady state, "
          f"{alive} transactions alive, {tracked} objects tracked by the GC, "
          f"{tracked / max(alive, 1):.1f} per transaction): "
          f"{1e6 * Pipeline.gatewayCPU / calls:.0f} us gateway CPU per call, "
          f"{1e6 * total / calls:.0f} us with the scripted peers; the GC took "
          f"{1e6 * gcTime[0] / calls:.0f} us per call of that")
    if not (bindings and dialogs):
        return

    p.tick(40)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(bindings):
        p.register(f"user{i}", Peer("UDP", "127.0.0.1", 20000 + i))
    live = tracemalloc.get_traced_memory()[0]
    p.tick(40)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
    print(f"in-process heap per binding: {(kept - before) / bindings:.0f} B kept, "
          f"{(live - before) / bindings:.0f} B while its REGISTER transactions live")
    before = kept
    for n in range(dialogs):
        openCall(p, n)
    live = tracemalloc.get_traced_memory()[0]
    p.tick(40)
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"in-process heap per dialog (a spiralled call: both users' state): "
          f"{(kept - before) / dialogs:.0f} B kept, {(live - before) / dialogs:.0f} B while "
          "its INVITE transactions live")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,200,300,400,500,600,800,1200,1600,2400,3200,4800,6400",
                        help="offered call rates, calls/s (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="seconds of calls per step (default %(default)s)")
    parser.add_argument("--bindings", type=int, default=2000)
    parser.add_argument("--dialogs", type=int, default=500)
    parser.add_argument("--inprocess", action="store_true",
                        help="also measure the pipeline in-process (CPU per call, heap)")
    parser.add_argument("--inprocess-only", action="store_true",
                        help="measure the pipeline in-process and stop (no sockets, seconds)")
    parser.add_argument("--profile", action="store_true",
                        help="also run one step under cProfile and print the hot spots")
    parser.add_argument("--workers", default="auto",
                        help="the gateway's [sip] workers (default %(default)s)")
    options = parser.parse_args()
    rates = [int(r) for r in options.steps.split(",")]

    if options.inprocess or options.inprocess_only:
        inProcess(3000, options.bindings, options.dialogs)
        if options.inprocess_only:
            return
    workDir = tempfile.mkdtemp(prefix="sipxmpp-bench-proxy-")
    sipp = SippRunner(os.path.join(workDir, "sipp"), timeout=60)
    kamailio = KamailioServer(children=2, shmMB=512, maxBuffer=8 * 2**20)
    workers = (os.cpu_count() or 1) if options.workers == "auto" else int(options.workers)
    settings = {("log", "level"): "info", ("sip", "workers"): str(workers)}
    if workers > 1:
        settings["sip", "worker_ports"] = str(freeSIPPortRange(workers))
        global CALLER_TRANSPORT
        CALLER_TRANSPORT = "un"
    gateway = GatewayServer(upstreamPort=kamailio.port, settings=settings)
    began = time.monotonic()
    with ExitStack() as stack:
        stack.callback(sipp.stopAll)
        stack.enter_context(started(stack, kamailio))
        stack.enter_context(started(stack, gateway))
        uasPort = freeSIPPort()
        register(sipp, gateway.address, "callee-gw", uasPort)
        register(sipp, f"{LOOPBACK}:{kamailio.port}", "callee-k", uasPort)
        uas = startUAS(sipp, uasPort)
        print(f"sipp {sipp.binary}, Kamailio {kamailio.binary} (2 workers), gateway pid "
              f"{gateway.pid}; {options.seconds:g} s of calls per step, at least {MIN_CALLS}")
        print(f"{os.cpu_count()} CPUs, load average before: "
              + " ".join(f"{x:.2f}" for x in os.getloadavg())
              + " (everything else running on the machine competes with the ramp)")

        gatewayPid = gateway.pid
        assert gatewayPid is not None
        workerPids = gatewayWorkers(gateway, workers)
        print(f"gateway workers: {workers} "
              + (f"(--workers {options.workers}; pids {' '.join(map(str, workerPids))}); "
                 f"the UAC sends with sipp -t {CALLER_TRANSPORT}"
                 if workerPids else "(SIP in the main process)"))

        def settle() -> None:
            # Let the gateway's backlog drain before the next step.
            time.sleep(1.0)

        perCall: dict[str, float] = {}
        kamailioPid = kamailio.pid
        assert kamailioPid is not None
        watch: Watch = {"gateway": lambda: treeCPU(gatewayPid),
                        "kamailio": lambda: treeCPU(kamailioPid),
                        "sipp": sippCPU(uas)}
        for index, pid in enumerate(workerPids):
            watch[f"worker{index}"] = lambda pid=pid: cpuTimes(pid)  # type: ignore[misc]
        ramps: dict[str, list[Step]] = {}

        def throughGateway(name: str, callee: str, kind: str) -> int:
            received = messagesReceived(gateway.metrics())
            figure, steps = ramp(name, sipp, gateway.address, callee, rates,
                                 options.seconds, settle, watch)
            ramps[name] = steps
            cpu = sum(sum(s.cpu["gateway"]) for s in steps)
            metrics = gateway.metrics()
            calls = sum(s.successful for s in steps)
            perCall[name] = (messagesReceived(metrics) - received) / max(calls, 1)
            print(f"  gateway CPU: {cpu:.1f} s for {calls} {kind} calls "
                  f"({1000 * cpu / max(calls, 1):.2f} ms per call, "
                  f"{perCall[name]:.1f} messages received per call); "
                  f"{collectorSummary(metrics)} (since start)")
            if workerPids:
                print("  CPU per call per worker: " + ", ".join(
                    f"worker {i} {1000 * sum(sum(s.cpu[f'worker{i}']) for s in steps) / max(calls, 1):.2f} ms"
                    for i in range(len(workerPids)))
                    + f" (main process and workers together {1000 * cpu / max(calls, 1):.2f} ms)")
            return figure

        sipxmpp = throughGateway("sipxmpp", "callee-gw", "spiralled (both legs)")
        outbound = throughGateway("outbound", "callee-k", "outbound (one leg)")
        kam, ramps["kamailio"] = ramp("kamailio", sipp, f"{LOOPBACK}:{kamailio.port}",
                                      "callee-k", rates, options.seconds, settle,
                                      {"kamailio": watch["kamailio"], "sipp": watch["sipp"]})
        cpuPerCall(ramps)
        budget(ramps, kam)
        if options.bindings or options.dialogs:
            print("gateway memory (a gateway of its own):")
            measureMemory(kamailio, sipp, uas, options.bindings, options.dialogs)
            uas = startUAS(sipp, uasPort)
        if options.profile and sipxmpp:
            profile(kamailio, sipp, uas, sipxmpp, options.seconds, workDir)
    # The ceiling of the stack itself: per call, as many datagrams relayed
    # as the gateway received (it sends about as many), at the cost of a
    # Twisted relay that does nothing else, on one core.
    costs = {"in bursts (a saturated reactor)": relayCost(),
             "one at a time (each wakes the reactor)": relayCost(*ONE_BY_ONE)}
    print("stack floor: the CPU a Twisted UDP relay doing no SIP work spends per datagram "
          "relayed (bench/floor.py); at the messages per call above, one reactor on one "
          "core could do at most:")
    for how, cost in costs.items():
        if cost is None:
            print(f"  datagrams {how}: not measured (the relay lost datagrams)")
            continue
        print(f"  datagrams {how}, {1e6 * cost:.1f} us each:")
        for name, count in perCall.items():
            ceiling = 1 / (cost * count) if count else 0.0
            print(f"    {name:8s} {ceiling:.0f} cps with no SIP work at all "
                  f"({ceiling / kam if kam else 0.0:.2f} of kamailio's {kam} cps)")
    print(f"total {time.monotonic() - began:.0f} s; load average after: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"one leg through the gateway (caller ours, callee registered at Kamailio "
          f"directly) / kamailio: {outbound / kam if kam else 0.0:.2f} "
          f"(outbound {outbound} cps, kamailio {kam} cps)")
    ratio = sipxmpp / kam if kam else 0.0
    print(f"proxy cps ratio sipxmpp/kamailio: {ratio:.2f} "
          f"(sipxmpp {sipxmpp} cps, kamailio {kam} cps)")


if __name__ == "__main__":
    stopServersOnTerminate()
    main()
