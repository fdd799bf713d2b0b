"""
Benchmark: N live XMPP sessions in one gateway (issue 21).

Run from the repository root::

    .venv/bin/python bench/sessions.py [--users 10000] [--rate 500]
        [--timeout 1800] [--calls 20] [--presences 5] [--rest 30]
        [--set SECTION.KEY=VALUE ...]

Everything runs on 127.0.0.1: Prosody 0.12 (STARTTLS, SCRAM-SHA-1 with
10,000 iterations, C{csi_simple} loaded as in Debian's stock
configuration, no c2s rate limits), Kamailio as the registrar, and the
gateway in front of it (log level C{info}, otherwise its defaults, or
what C{--set} says, e.g. C{--set xmpp.login_rate=200}).

Provisioning, quick: the users C{u-1} ... C{u-N} are written straight
into Prosody's account files (SCRAM keys computed on two processes and
cached under C{~/.cache/sipxmpp-bench/}, so a second run costs nothing),
each with one contact, C{watcher}, whose roster holds them all; the
gateway gets them in one C{sipxmpp-admin account import}. The watcher logs
in first (a plain-socket client in this process).

Then, in order:

  - B{login storm}: one sipp registers every user through the gateway
    (C{proxy_bench_register.xml}, C{--rate} REGISTERs per second); the
    storm lasts from the first REGISTER until the gateway's
    C{sipxmpp_xmpp_sessions{state="connected"}} reaches N. The times at
    which 10/50/90 % were connected are printed too (with a FIFO of logins
    the median user waits about half the storm, without one about all of
    it), and the gateway's CPU per login;
  - B{memory}: the gateway's RSS before the REGISTERs and once every
    session is up, per session (this includes each user's SIP binding);
  - B{CPU at rest}: the gateway's CPU over C{--rest} seconds with every
    session up, per session and second;
  - B{CPU per contact presence}: the watcher changes its presence
    C{--presences} times; Prosody sends each change to every session; the
    gateway's CPU until it is quiet again, less the rest rate, per
    stanza delivered (N per change; with XEP-0352 C{inactive} the server
    may hold them back and send them later in bulk, and that is counted
    when it comes);
  - B{presence latency}: C{--calls} calls to distinct users through the
    gateway and Kamailio to a sipp UAS; from the INVITE (sipp's message
    trace) to the watcher receiving the callee's dnd presence;
  - B{reconnect storm}: Prosody is stopped and started again on the same
    port (after C{--down} seconds); from the moment it accepts again
    until every session is connected again; and the RSS after it
    (C{--reconnects K}: K times).

The bench refuses to start when the open-file limit cannot hold the
sessions (the gateway and Prosody each need one descriptor per session).
The machine is shared: the load average is printed at the start and the
end, and CPU figures (from /proc) matter more than wall times.

The last line is::

    sessions N: login storm X s, Y KB per session, reconnect Z s

C{--profile storm} (or C{reconnect}) runs cProfile in the gateway's
process over that phase, in CPU time (C{--profile-file FILE} keeps it as
C{FILE.storm}); profiled, the gateway's CPU figures are inflated.

C{--inprocess [--users 500] [--rounds K] [--profile PHASE] [--tracemalloc]
[--tickets] [--no-tls-resumption]} measures the sessions alone, in this
process (L{SessionFactory}, no gateway, SIP or publisher), against the
same Prosody: the CPU per login (C{getrusage}) with SCRAM keys not cached,
cached (K times), and after Prosody restarts, with how many logins resumed
their TLS session; the RSS per session and what malloc holds of it.
C{--profile} runs cProfile (CPU time) over the phases whose name starts
with PHASE ("login again"); C{--tickets} lets Prosody resume TLS sessions
(its default resumes none); C{--no-tls-resumption} keeps the sessions from
offering theirs. C{--reconnects K} restarts Prosody K times and says
where the memory went each time (RSS; glibc's malloc in use, free and
mmapped; CPython's arenas; objects by type; with C{--tracemalloc} the
allocation sites that grew); C{--gateway-gc} applies the gateway's
garbage-collector settings, C{--collect-when-down} collects once every
session is down, C{--trim} calls C{malloc_trim(0)} at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sipxmpp.testing.demo import Watcher  # noqa: E402
from sipxmpp.testing.gateway import TWISTD, GatewayServer  # noqa: E402
from sipxmpp.testing.kamailio import KamailioServer  # noqa: E402
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, freeTCPPort  # noqa: E402
from sipxmpp.testing.process import stopServersOnTerminate  # noqa: E402
from sipxmpp.testing.prosody import ProsodyServer  # noqa: E402
from sipxmpp.testing.sipp import SippProcess, SippRunner  # noqa: E402
from sipxmpp.testing.templates import etcPath  # noqa: E402
from sipxmpp.testing.xmppprobe import login  # noqa: E402

DOMAIN = "example.test"
ITERATIONS = 10000  # Prosody 0.12's default for new accounts
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "sipxmpp-bench")
CONNECTED = re.compile(r'^sipxmpp_xmpp_sessions\{state="connected"\} (\S+)$', re.M)
TRACE_TIME = re.compile(r"^-+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*\n[^\n]*message sent",
                        re.M)  # fmt: skip
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(message, flush=True)


def password(user: str) -> str:
    return f"{user}-secret"


def scramKeys(user: str) -> tuple[str, str, str]:
    """
    Return (salt, StoredKey hex, ServerKey hex) of C{user}'s password
    (RFC 5802), as Prosody's internal_hashed keeps them.
    """
    salt = hashlib.sha1(f"salt-{user}".encode()).hexdigest()[:16]
    salted = hashlib.pbkdf2_hmac("sha1", password(user).encode(), salt.encode(), ITERATIONS)
    clientKey = hmac.new(salted, b"Client Key", "sha1").digest()
    serverKey = hmac.new(salted, b"Server Key", "sha1").digest()
    return salt, hashlib.sha1(clientKey).hexdigest(), serverKey.hex()


def credentials(users: list[str]) -> dict[str, tuple[str, str, str]]:
    """
    Every user's SCRAM keys, from the cache or computed (PBKDF2 is 3.5 ms
    per user here) on two processes.
    """
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"scram-{ITERATIONS}.json")
    cached: dict[str, list[str]] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
    missing = [u for u in users if u not in cached]
    if missing:
        started = time.monotonic()
        with multiprocessing.Pool(2) as pool:
            for user, keys in zip(missing, pool.map(scramKeys, missing, chunksize=256), strict=True):
                cached[user] = list(keys)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(cached, f)
        os.replace(path + ".tmp", path)
        log(f"SCRAM keys of {len(missing)} users computed in {time.monotonic() - started:.1f} s "
            f"(cached in {path})")
    return {u: (cached[u][0], cached[u][1], cached[u][2]) for u in users}


def processTimes(pid: int, thread: int | None = None) -> float:
    """
    User plus system CPU seconds of process C{pid} (all its threads), or
    of its thread C{thread} (the main thread's id is C{pid}).
    """
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def childTimes(pid: int) -> float:
    """
    User plus system CPU seconds of C{pid}'s live child processes (the
    gateway's SIP workers with C{[sip] workers} above 1).
    """
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return total


def rss(pid: int) -> int:
    """
    Resident set size of C{pid} in bytes.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def memoryMap(pid: int) -> str:
    """
    Where C{pid}'s resident memory is (C{/proc/PID/smaps}): glibc's main
    heap (C{brk}: the reactor thread's small C allocations), anonymous
    mappings (CPython's arenas, other threads' malloc arenas, large
    blocks, stacks), files.
    """
    kinds = {"heap": 0, "anonymous": 0, "files": 0}
    name = ""
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if fields and not fields[0].endswith(":"):
                name = fields[5] if len(fields) > 5 else ""
            elif fields and fields[0] == "Rss:":
                kind = ("heap" if name == "[heap]" else
                        "anonymous" if not name or name.startswith("[") else "files")  # fmt: skip
                kinds[kind] += int(fields[1])
    return ", ".join(f"{kind} {kb / 1024:.0f} MB" for kind, kb in kinds.items())


def loadAverage() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


# The gateway's process with a CPU-time cProfile that SIGUSR2 turns on and,
# the next time, off (written to $SIPXMPP_BENCH_PROFILE), and SIGRTMIN+3
# writing CPython's and glibc's allocator statistics and the count of
# tracked objects to $SIPXMPP_BENCH_MEMORY (SIGRTMIN+5: after a full
# collection, with a census of the objects by type).
PROFILED_TWISTD = """
import cProfile, ctypes, os, signal, sys, time
def _memory(signum, frame, census=False):
    path = os.environ["SIPXMPP_BENCH_MEMORY"]
    with open(path + ".tmp", "wb") as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    class M(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = M
    m = libc.mallinfo2()
    import gc
    with open(path + ".tmp", "a") as out:
        out.write(f"\\nmallinfo2 used={m.uordblks} free={m.fordblks} mapped={m.hblkhd}"
                  f" objects={len(gc.get_objects())}\\n")
        if census:
            from collections import Counter
            kinds = Counter(type(o).__module__ + "." + type(o).__qualname__
                            for o in gc.get_objects())
            out.write("".join(f"census {n} {k}\\n" for k, n in kinds.most_common(400)))
    os.rename(path + ".tmp", path)
signal.signal(signal.SIGRTMIN + 3, _memory)
def _collectedMemory(signum, frame):
    import gc
    gc.collect()
    _memory(signum, frame, census=True)
signal.signal(signal.SIGRTMIN + 5, _collectedMemory)
def _garbage(signum, frame):
    import gc
    from collections import Counter
    gc.set_debug(gc.DEBUG_SAVEALL)
    found = gc.collect()
    gc.set_debug(0)
    kinds = Counter(type(o).__module__ + "." + type(o).__qualname__ for o in gc.garbage)
    gc.garbage.clear()
    gc.collect()
    with open(os.environ["SIPXMPP_BENCH_MEMORY"] + ".tmp", "w") as out:
        out.write(f"{found}\\n" + "".join(f"{n} {k}\\n" for k, n in kinds.most_common(40)))
    os.rename(os.environ["SIPXMPP_BENCH_MEMORY"] + ".tmp", os.environ["SIPXMPP_BENCH_MEMORY"])
signal.signal(signal.SIGRTMIN + 4, _garbage)
_profile = None
def _toggle(signum, frame):
    global _profile
    if _profile is None:
        _profile = cProfile.Profile(time.process_time)
        _profile.enable()
    else:
        _profile.disable()
        _profile.dump_stats(os.environ["SIPXMPP_BENCH_PROFILE"])
        _profile = None
signal.signal(signal.SIGUSR2, _toggle)
""" + TWISTD


class ProfiledGateway(GatewayServer):
    """
    The gateway with a cProfile of its main thread's CPU time over the
    phases C{--profile} names (C{storm}, C{reconnect}).
    """

    def __init__(self, profileFile: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.profileFile = profileFile
        self.memoryFile = profileFile + ".memory"
        self.census: dict[str, int] = {}

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "SIPXMPP_BENCH_PROFILE": self.profileFile,
                "SIPXMPP_BENCH_MEMORY": self.memoryFile}

    def garbage(self, sessions: int) -> str:
        """
        Collect the gateway's garbage (all generations) and say what it
        was, per session.
        """
        assert self.pid is not None
        if os.path.exists(self.memoryFile):
            os.unlink(self.memoryFile)
        os.kill(self.pid, signal.SIGRTMIN + 4)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.memoryFile) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(self.memoryFile, encoding="utf-8", errors="replace") as f:
            found, *lines = f.read().splitlines()
        kinds = [line.split(" ", 1) for line in lines if line]
        return (f"{int(found) / sessions:.1f} objects per session: "
                + ", ".join(f"{kind} {int(count) / sessions:.2f}" for count, kind in kinds))

    def allocatorFigures(self, collect: bool = False) -> dict[str, int]:
        """
        The gateway's allocators now, in bytes: glibc's malloc (all arenas:
        C{used}, C{free}, C{mapped}) and CPython's (C{arenas}, C{pyUsed},
        C{pyFree}), and C{objects}, the objects the collector tracks.

        @param collect: a full garbage collection first, so that what is
            counted is alive; then L{census} holds the tracked objects'
            count by type (the 400 commonest).
        """
        assert self.pid is not None
        if os.path.exists(self.memoryFile):
            os.unlink(self.memoryFile)
        os.kill(self.pid, signal.SIGRTMIN + (5 if collect else 3))
        deadline = time.monotonic() + 30
        while not os.path.exists(self.memoryFile) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(self.memoryFile, encoding="ascii", errors="replace") as f:
            text = f.read()
        p = parsePymalloc(text)
        m = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text.rsplit("mallinfo2", 1)[1])}
        self.census = {kind: int(count) for count, kind in
                       re.findall(r"^census (\d+) (\S+)$", text, re.M)}
        return {"used": m["used"], "free": m["free"], "mapped": m["mapped"],
                "objects": m["objects"], "arenas": p["arenas"], "pyUsed": p["used"],
                "pyFree": p["free"]}

    def allocators(self) -> str:
        """
        The gateway's allocators now: glibc's malloc (all arenas) and
        CPython's.
        """
        f = self.allocatorFigures()
        return (f"malloc in use {f['used'] / 2**20:.0f} MB, free {f['free'] / 2**20:.0f} MB, "
                f"mmapped {f['mapped'] / 2**20:.0f} MB; CPython {f['arenas']} arenas, "
                f"{f['pyUsed'] / 2**20:.0f} MB in objects, {f['pyFree'] / 2**20:.0f} MB free "
                "in them")

    def command(self) -> list[str]:
        return [sys.executable, "-c", PROFILED_TWISTD, *super().command()[3:]]


class GatewayProfile:
    """
    Turns the gateway's profile on and off around the phases named, and
    prints it.
    """

    def __init__(self, gateway: GatewayServer, phases: list[str], lines: int,
                 keep: str) -> None:  # fmt: skip
        self.gateway = gateway
        self.phases = phases
        self.lines = lines
        self.keep = keep

    def wanted(self, phase: str) -> bool:
        return isinstance(self.gateway, ProfiledGateway) and any(
            phase.startswith(p) for p in self.phases)

    def start(self, phase: str) -> None:
        if self.wanted(phase):
            assert self.gateway.pid is not None
            os.kill(self.gateway.pid, signal.SIGUSR2)

    def stop(self, phase: str) -> None:
        import pstats

        if not self.wanted(phase):
            return
        assert isinstance(self.gateway, ProfiledGateway) and self.gateway.pid is not None
        path = self.gateway.profileFile
        if os.path.exists(path):
            os.unlink(path)
        os.kill(self.gateway.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)  # dump_stats may still be writing
        log(f"gateway profile of the {phase} (CPU time of its main thread):")
        stats = pstats.Stats(path, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(self.lines)
        stats.sort_stats("cumulative").print_stats(self.lines)
        if self.keep:
            shutil.copy(path, f"{self.keep}.{phase}")


class Sessions:
    """
    Reads the gateway's count of connected sessions; a storm can keep its
    reactor from answering for seconds, which is counted, not fatal.
    """

    def __init__(self, gateway: GatewayServer) -> None:
        self.url = f"http://{LOOPBACK}:{gateway.httpPort}/metrics"
        self.last = 0
        self.slow = 0

    def connected(self) -> int:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=60) as response:
                text = response.read().decode("utf-8")
        except OSError:
            self.slow += 1
            return self.last
        if time.monotonic() - started > 1.0:
            self.slow += 1
        match = CONNECTED.search(text)
        self.last = int(float(match.group(1))) if match else 0
        return self.last


def prosodyTemplate(workDir: str) -> str:
    """
    The tests' Prosody configuration with C{csi_simple} (in Debian's stock
    modules_enabled), so that a client's XEP-0352 C{inactive} has effect.
    """
    with open(etcPath("prosody.cfg.lua.in"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace('\t"posix";', '\t"posix";\n\t"csi_simple";', 1)
    if '"csi_simple"' not in text:
        raise BenchError("could not add csi_simple to Prosody's modules")
    path = os.path.join(workDir, "prosody.cfg.lua.in")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def checkFileLimit(users: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = users + 1000
    if soft < need <= hard or (hard == resource.RLIM_INFINITY and soft < need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    log(f"open-file limit {soft} (hard {hard}); Prosody and the gateway inherit it")
    if soft != resource.RLIM_INFINITY and soft < need:
        raise BenchError(f"{users} sessions need {need} open files in Prosody and in the "
                         f"gateway; the hard limit is {hard} (raise it: ulimit -Hn)")


class Bound:
    """
    The whole run's time bound.
    """

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise BenchError(f"over the {self.seconds:g} s bound while {what}")


class Registrations:
    """
    The phones: one sipp REGISTERs the users from an injection file at a
    rate. A REGISTER the overloaded gateway answered 408 or 503, or never,
    leaves its user without a session: once sipp is done, the users the
    gateway's C{/status} does not list are registered again (another
    round), as phones retry.
    """

    def __init__(self, sipp: SippRunner, gateway: GatewayServer, port: int, rate: int,
                 workDir: str, bound: Bound) -> None:  # fmt: skip
        self.sipp = sipp
        self.gateway = gateway
        self.port = port
        self.rate = rate
        self.workDir = workDir
        self.bound = bound
        self.rounds: list[str] = []
        self.process: SippProcess | None = None
        self.users: list[str] = []

    def start(self, users: list[str]) -> None:
        self.users = users
        path = os.path.join(self.workDir, f"register-{len(self.rounds) + 1}.csv")
        with open(path, "w", encoding="ascii") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{u};\n" for u in users))
        self.process = self.sipp.start(
            "bench_register_inf", self.gateway.address, keys={"domain": DOMAIN, "expires": 3600},
            localPort=self.port, calls=len(users), timeout=self.bound.seconds, waitBound=False,
            extraArgs=["-inf", path, "-r", str(self.rate), "-l", str(max(self.rate * 4, 100))],
        )

    def poll(self) -> None:
        """
        Start the next round once sipp is done, if users are missing.
        """
        if self.process is None or self.process.running:
            return
        result = self.process.wait(10)
        self.process = None
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.gateway.httpPort}/status",
                                        timeout=60) as response:  # fmt: skip
                known = set(json.load(response)["users"])
        except OSError:
            known = set()
        missing = [u for u in self.users if f"sip:{u}@{DOMAIN}" not in known]
        self.rounds.append(f"{len(self.users)} sent, {result.successful} ok in sipp's view, "
                           f"{len(missing)} without a session")  # fmt: skip
        if missing:
            log(f"  REGISTER round {len(self.rounds)}: {self.rounds[-1]}; again")
            self.start(missing)

    def describe(self) -> str:
        if self.process is not None:
            self.process.stop()
            self.process = None
            self.rounds.append("(still running: stopped)")
        return "; ".join(f"{i}: {text}" for i, text in enumerate(self.rounds, 1))


def waitConnected(gateway: GatewayServer, users: int, since: float, bound: Bound,
                  what: str, poll: Callable[[], None] = lambda: None,
                  ) -> tuple[float, dict[int, float]]:  # fmt: skip
    """
    Poll the gateway's metrics until C{users} sessions are connected;
    return the time since C{since} and when 10/50/90 % were reached.
    """
    marks = {10: 0.0, 50: 0.0, 90: 0.0}
    lastReport = time.monotonic()
    sessions = Sessions(gateway)
    while True:
        poll()
        count = sessions.connected()
        now = time.monotonic()
        for percent in marks:
            if not marks[percent] and count * 100 >= percent * users:
                marks[percent] = now - since
        if count >= users:
            if sessions.slow:
                log(f"  {what}: /metrics took over 1 s (or failed) {sessions.slow} times")
            return now - since, marks
        if now - lastReport >= 10:
            log(f"  {what}: {count} of {users} connected after {now - since:.0f} s")
            lastReport = now
        bound.check(f"{what} ({count} of {users} connected)")
        # Not more often: at 10,000 sessions each /metrics costs the
        # gateway tens of ms (18 % of its time when read every 0.25 s, on
        # the shared machine).
        time.sleep(1.0)


def waitQuiet(pid: int, bound: Bound, restRate: float, interval: float = 2.0) -> float:
    """
    Wait until the gateway's CPU rate is back near its rest rate (three
    intervals in a row: the server may be slow to fan a presence out);
    return when that began.
    """
    calm = 0
    last = processTimes(pid)
    quietSince = time.monotonic()
    while calm < 3:
        time.sleep(interval)
        now = processTimes(pid)
        if now - last <= max(2 * restRate * interval, 0.02):
            calm += 1
        else:
            calm = 0
            quietSince = time.monotonic()
        last = now
        bound.check("waiting for the gateway to be quiet")
    return quietSince


def waitNotOverloaded(gateway: GatewayServer, bound: Bound) -> None:
    """
    Wait until the gateway's overload monitor accepts calls again.
    """
    url = f"http://{LOOPBACK}:{gateway.httpPort}/metrics"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                if "\nsipxmpp_sip_overloaded 0" in response.read().decode("utf-8"):
                    return
        except OSError:
            pass
        bound.check("waiting for the gateway's overload to end")
        time.sleep(1.0)


def inviteTime(messages: str) -> float:
    """
    The wall time at which sipp sent its first message (the INVITE).
    """
    match = TRACE_TIME.search(messages)
    if match is None:
        raise BenchError(f"no sent message in sipp's trace:\n{messages[:500]}")
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def parseSettings(pairs: list[str]) -> dict[tuple[str, str], str]:
    settings: dict[tuple[str, str], str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--set wants SECTION.KEY=VALUE, not {pair!r}")
        settings[(section, name)] = value
    return settings


def run(args: argparse.Namespace) -> None:
    bound = Bound(args.timeout)
    n = args.users
    users = [f"u-{i}" for i in range(1, n + 1)]
    log(f"sessions bench: {n} users, REGISTER rate {args.rate}/s, load average {loadAverage()} "
        f"on {os.cpu_count()} cores")
    checkFileLimit(n)
    keys = credentials(users)
    workDir = tempfile.mkdtemp(prefix="sipxmpp-sessions-")
    prosody = ProsodyServer(port=freeTCPPort(), baseDir=os.path.join(workDir, "prosody"),
                            users={"watcher": password("watcher")},
                            template=prosodyTemplate(workDir))  # fmt: skip
    kamailio = KamailioServer(children=2, shmMB=256)
    gateway: GatewayServer | None = None
    sipp = SippRunner(os.path.join(workDir, "sipp"), timeout=args.timeout)
    probe = None
    watcher: Watcher | None = None
    uas: SippProcess | None = None
    try:
        started = time.monotonic()
        prosody.prepare()
        for user in users:
            salt, stored, server = keys[user]
            prosody.writeAccount(user, salt, ITERATIONS, bytes.fromhex(stored), bytes.fromhex(server))
            prosody.addRosterItems(user, [prosody.jid("watcher")])
        prosody.addRosterItems("watcher", [prosody.jid(u) for u in users])
        log(f"Prosody: {n} accounts and rosters written in {time.monotonic() - started:.1f} s")
        prosody.start()
        kamailio.start()
        settings = {("log", "level"): "info", **parseSettings(args.set)}
        gatewayArgs = {"upstreamPort": kamailio.port, "xmppServer": f"{prosody.host}:{prosody.port}",
                       "caFile": prosody.caFile, "baseDir": os.path.join(workDir, "gateway"),
                       "settings": settings}  # fmt: skip
        gateway = (ProfiledGateway(os.path.join(workDir, "gateway.prof"), **gatewayArgs)
                   if args.profile or args.allocators or args.garbage
                   else GatewayServer(**gatewayArgs))  # type: ignore[arg-type]

        def allocators() -> str:
            return (f"; {gateway.allocators()}" if isinstance(gateway, ProfiledGateway)
                    and args.allocators else "")  # fmt: skip

        profile = GatewayProfile(gateway, args.profile, args.profileLines, args.profileFile)
        gateway.start()
        assert gateway.pid is not None
        pid = gateway.pid
        started = time.monotonic()
        importFile = os.path.join(workDir, "accounts.csv")
        with open(os.open(importFile, os.O_WRONLY | os.O_CREAT, 0o600), "w",
                  encoding="utf-8") as f:  # fmt: skip
            f.write("aor,jid,password\n")
            for user in users:
                f.write(f"sip:{user}@{DOMAIN},{user}@{DOMAIN},{password(user)}\n")
        gateway.admin("account", "import", importFile)
        log(f"gateway: {n} accounts imported in {time.monotonic() - started:.1f} s "
            f"(sipxmpp-admin account import); settings {sorted(settings.items())}")

        probe = login(LOOPBACK, prosody.port, DOMAIN, "watcher", password("watcher"),
                      prosody.caFile, "watch")
        watcher = Watcher(probe)
        probe.sendPresence()
        watcher.start()

        time.sleep(2.0)
        rssBefore = rss(pid)
        cpuBefore = processTimes(pid)
        mainBefore = processTimes(pid, pid)
        childrenBefore = childTimes(pid)
        assert prosody.pid is not None
        prosodyBefore = processTimes(prosody.pid)
        phonePort = freeSIPPort()
        log(f"login storm: registering {n} users at {args.rate}/s")
        stormStart = time.monotonic()
        registering = Registrations(sipp, gateway, phonePort, args.rate, workDir, bound)
        profile.start("storm")
        registering.start(users)
        storm, marks = waitConnected(gateway, n, stormStart, bound, "login storm",
                                     registering.poll)  # fmt: skip
        cpuStorm = processTimes(pid) - cpuBefore
        cpuMain = processTimes(pid, pid) - mainBefore
        cpuChildren = childTimes(pid) - childrenBefore
        cpuProsody = processTimes(prosody.pid) - prosodyBefore
        profile.stop("storm")
        log(f"login storm: {storm:.1f} s until all {n} connected; 10 % at {marks[10]:.1f} s, "
            f"50 % at {marks[50]:.1f} s, 90 % at {marks[90]:.1f} s; REGISTER rounds: "
            f"{registering.describe()}")
        if cpuChildren:
            log(f"gateway's child processes (SIP workers): {cpuChildren:.1f} s of CPU during the "
                f"storm, {cpuChildren / n * 1000:.2f} ms per login")
        log(f"Prosody's CPU during the storm: {cpuProsody:.1f} s, {cpuProsody / n * 1000:.2f} ms "
            f"per login")
        log(f"gateway CPU during the storm: {cpuStorm:.1f} s, {cpuStorm / n * 1000:.2f} ms per "
            f"login (REGISTER included; its reactor's thread {cpuMain / n * 1000:.2f} ms); load "
            f"average {loadAverage()}")

        time.sleep(5.0)
        rssAfter = rss(pid)
        perSession = (rssAfter - rssBefore) / n / 1024
        log(f"gateway RSS: {rssBefore / 2**20:.0f} MB before, {rssAfter / 2**20:.0f} MB with "
            f"{n} sessions: {perSession:.1f} KB per session (SIP binding included); "
            f"{memoryMap(pid)}{allocators()}")

        cpu0 = processTimes(pid)
        time.sleep(args.rest)
        restCPU = processTimes(pid) - cpu0
        restRate = restCPU / args.rest
        log(f"gateway CPU at rest: {restCPU:.2f} s over {args.rest:g} s: "
            f"{restRate / n * 1e6:.2f} us per session per second")

        cpu0 = processTimes(pid)
        t0 = time.monotonic()
        for i in range(args.presences):
            probe.sendPresence(show="away" if i % 2 == 0 else None)
            time.sleep(2.0)
        quietSince = waitQuiet(pid, bound, restRate)
        busy = processTimes(pid) - cpu0 - restRate * (quietSince - t0)
        stanzas = args.presences * n
        log(f"gateway CPU per contact presence: {busy:.2f} s for {args.presences} changes of "
            f"the watcher ({stanzas} stanzas to the sessions): "
            f"{busy / stanzas * 1e6:.1f} us per stanza")
        probe.sendPresence()
        waitQuiet(pid, bound, restRate)

        uas = sipp.start("uas", service="phone", localPort=phonePort, calls=args.calls,
                         timeout=args.timeout)  # fmt: skip
        latencies = []
        refused = 0
        offset = time.time() - time.monotonic()
        step = max(1, n // max(1, args.calls))
        for i in range(args.calls):
            callee = users[(i * step + step // 2) % n]
            full = f"{callee}@{DOMAIN}/"
            waitNotOverloaded(gateway, bound)
            for _attempt in range(6):
                call = sipp.call(gateway.address, callee, DOMAIN, holdMs=500, traceMessages=True)
                if call.ok:
                    break
                # The overload monitor may still refuse calls (503,
                # Retry-After 5) for a while after a burst.
                refused += 1
                bound.check(f"calling {callee}")
                time.sleep(5.0)
                waitNotOverloaded(gateway, bound)
            else:
                raise BenchError(f"call to {callee}: {call.describe()}")
            sentAt = inviteTime(call.messages)
            deadline = time.monotonic() + 30
            seen = None
            while seen is None and time.monotonic() < deadline:
                seen = next((s for s in list(watcher.sightings)
                             if s.jid.startswith(full) and s.show == "dnd"
                             and s.at + offset >= sentAt - 0.001), None)  # fmt: skip
                time.sleep(0.05)
            if seen is None:
                raise BenchError(f"the watcher saw no dnd of {callee} within 30 s of the call")
            latencies.append((seen.at + offset - sentAt) * 1000)
        log(f"presence latency of a call at this load (INVITE to the watcher's dnd, "
            f"n={len(latencies)}): p50 {percentile(latencies, 50):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms; "
            f"{refused} attempts failed first (retried after 5 s)")
        uas.stop()
        uas = None

        watcher.stop()
        probe.close()
        probe = watcher = None
        reconnects = []
        for round in range(1, args.reconnects + 1):
            log(f"reconnect storm {round}: stopping Prosody")
            stopped = time.monotonic()
            cpu0 = processTimes(pid)
            main0 = processTimes(pid, pid)
            profile.start("reconnect")
            prosody.stop()
            # A real server's restart takes longer (large rosters, a
            # package upgrade): --down keeps it down meanwhile.
            time.sleep(args.down)
            prosody.start()
            back = time.monotonic()
            reconnect, marks = waitConnected(gateway, n, back, bound, "reconnect storm")
            cpuReconnect = processTimes(pid) - cpu0
            cpuMain = processTimes(pid, pid) - main0
            assert prosody.pid is not None
            cpuProsody = processTimes(prosody.pid)  # a new process since its start
            profile.stop("reconnect")
            reconnects.append(reconnect)
            log(f"reconnect storm {round}: Prosody down for {back - stopped:.1f} s; "
                f"{reconnect:.1f} s from its restart until all {n} connected again "
                f"({reconnect + back - stopped:.1f} s from its stop); 10 % at {marks[10]:.1f} s, "
                f"50 % at {marks[50]:.1f} s, 90 % at {marks[90]:.1f} s; gateway CPU "
                f"{cpuReconnect:.1f} s ({cpuReconnect / n * 1000:.2f} ms per login, its reactor's "
                f"thread {cpuMain / n * 1000:.2f} ms); Prosody's "
                f"CPU since its start {cpuProsody:.1f} s ({cpuProsody / n * 1000:.2f} ms per login)")
            time.sleep(5.0)
            if args.garbage and isinstance(gateway, ProfiledGateway):
                log(f"gateway's garbage after reconnect storm {round}: {gateway.garbage(n)}")
            log(f"gateway RSS after reconnect storm {round}: {rss(pid) / 2**20:.0f} MB "
                f"(was {rssAfter / 2**20:.0f} MB with the sessions up; {memoryMap(pid)}"
                f"{allocators()}); "
                f"load average {loadAverage()}")
        reconnect = reconnects[0]
        log(f"sessions {n}: login storm {storm:.1f} s, {perSession:.0f} KB per session, "
            f"reconnect {reconnect:.1f} s")
    finally:
        if watcher is not None:
            watcher.stop()
        if probe is not None:
            probe.close()
        if uas is not None:
            uas.stop()
        sipp.stopAll()
        for server in (gateway, kamailio, prosody):
            if server is not None:
                server.stop()
        if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            shutil.rmtree(workDir, ignore_errors=True)


def inProcess(args: argparse.Namespace) -> None:
    """
    C{--inprocess}: the sessions in this process (L{SessionFactory}, no
    gateway, SIP or publisher) against Prosody; CPU per login from
    C{getrusage}, so it is that of the sessions alone.
    """
    import cProfile
    import gc
    import pstats
    import tracemalloc

    from OpenSSL._util import lib as _openssl
    from twisted.internet import reactor, task
    from twisted.words.protocols.jabber.jid import JID

    from sipxmpp.xmpp.sasl import KEY_CACHE
    from sipxmpp.xmpp.session import SessionFactory, SessionSettings, XMPPSession
    from sipxmpp.xmpp.tls import tlsConnection

    n = args.users
    users = [f"u-{i}" for i in range(1, n + 1)]
    log(f"sessions bench, in process: {n} users, load average {loadAverage()} on "
        f"{os.cpu_count()} cores")
    checkFileLimit(n)
    keys = credentials(users)
    workDir = tempfile.mkdtemp(prefix="sipxmpp-sessions-")
    prosody = ProsodyServer(port=freeTCPPort(), baseDir=os.path.join(workDir, "prosody"),
                            template=prosodyTemplate(workDir), tlsTickets=args.tickets,
                            streamManagement=args.smacks)  # fmt: skip
    prosody.prepare()
    for user in users:
        salt, stored, server = keys[user]
        prosody.writeAccount(user, salt, ITERATIONS, bytes.fromhex(stored), bytes.fromhex(server))
    settings = SessionSettings(server=f"{prosody.host}:{prosody.port}",
                               **dict(parseInProcessSettings(args.set)))  # fmt: skip
    connected: set[int] = set()
    resumed: set[int] = set()
    collecting: list[object] = []

    def collectNow() -> None:
        from collections import Counter

        started = time.process_time()
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        gc.set_debug(0)
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
        gc.garbage.clear()
        gc.collect()
        log(f"  every session down: gc.collect() found {found} objects in "
            f"{(time.process_time() - started) * 1000:.0f} ms"
            + ("; per session: " + ", ".join(f"{name} {count / n:.2f}" for name, count
                                              in kinds.most_common(25))
               if found > n else ""))  # fmt: skip
        collecting.clear()

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    async def allConnected(what: str) -> float:
        started = time.monotonic()
        while len(connected) < n:
            if time.monotonic() - started > args.timeout:
                raise BenchError(f"{what}: {len(connected)} of {n} connected after "
                                 f"{args.timeout:g} s")  # fmt: skip
            await task.deferLater(reactor, 0.05, lambda: None)
        return time.monotonic() - started

    async def phase(what: str, start: Callable[[], object]) -> None:
        connected.clear()
        resumed.clear()
        gc.collect()
        profile = cProfile.Profile(time.process_time) if any(what.startswith(p) for p in args.profile) else None
        cpu0 = cpu()
        if profile is not None:
            profile.enable()
        start()
        wall = await allConnected(what)
        if profile is not None:
            profile.disable()
        used = cpu() - cpu0
        log(f"{what}: {n} sessions connected in {wall:.1f} s ({len(resumed)} resumed their TLS "
            f"session); CPU {used:.2f} s, {used / n * 1000:.2f} ms per login; load average "
            f"{loadAverage()}")
        if profile is not None:
            if args.profileFile:
                profile.dump_stats(args.profileFile)
            stats = pstats.Stats(profile, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.profileLines)
            stats.sort_stats("cumulative").print_stats(args.profileLines)

    async def bench() -> None:
        if args.gatewayGC:
            from sipxmpp.processes.gctuning import YoungCollector, tuneGarbageCollector

            tuneGarbageCollector()
            YoungCollector(reactor).start()
        factory = SessionFactory(reactor, settings, caFile=prosody.caFile)
        sessions = []
        for i, user in enumerate(users):
            session = factory(JID(f"{user}@{DOMAIN}"), password(user))

            def changed(state: str, i: int = i, session: XMPPSession = session) -> None:
                if state == "connected":
                    connected.add(i)
                    stream = session._stream
                    handle = tlsConnection(stream.transport if stream is not None else None)
                    # pyOpenSSL has no SSL_session_reused.
                    if handle is not None and _openssl.SSL_session_reused(handle._ssl):
                        resumed.add(i)
                else:
                    connected.discard(i)
                    if args.collectWhenDown and not connected and not collecting:
                        # Every session down: their old connections'
                        # garbage collected before they connect again.
                        collecting.append(reactor.callLater(0, collectNow))

            session.onStateChanged = changed
            if args.noResumption:
                session.tls.remember = lambda transport: None  # type: ignore[method-assign]
            sessions.append(session)
        gc.collect()
        rssBefore = rss(os.getpid())
        mallocBefore = mallocInUse()
        tracedBefore = tracemalloc.get_traced_memory()[0] if args.tracemalloc else 0
        await phase("login, SCRAM keys not cached", lambda: [s.start() for s in sessions])
        gc.collect()
        rssAfter = rss(os.getpid())
        log(f"RSS: {rssBefore / 2**20:.1f} MB before, {rssAfter / 2**20:.1f} MB with {n} "
            f"sessions: {(rssAfter - rssBefore) / n / 1024:.1f} KB per session, of which "
            f"{(mallocInUse() - mallocBefore) / n / 1024:.1f} KB in use from malloc (C, and "
            f"Python objects over 512 bytes)")
        if args.tracemalloc:
            traced = (tracemalloc.get_traced_memory()[0] - tracedBefore) / n / 1024
            log(f"Python objects (tracemalloc): {traced:.1f} KB per session")
            snapshot = tracemalloc.take_snapshot()
            for stat in snapshot.statistics("traceback")[:args.profileLines]:
                log(f"{stat.size / n / 1024:.2f} KB per session, {stat.count / n:.1f} blocks:")
                for line in stat.traceback.format()[-8:]:
                    log("    " + line)
        await defer.gatherResults([s.stop() for s in sessions])
        log(f"SCRAM key cache: {len(KEY_CACHE)} entries")
        for round in range(args.rounds):
            if round:
                await defer.gatherResults([s.stop() for s in sessions])
            await phase("login again, SCRAM keys cached", lambda: [s.start() for s in sessions])

        def restart() -> None:
            prosody.stop()
            prosody.start()

        gc.collect()
        baseline = MemoryState(n, args.tracemalloc)
        log(f"memory with the {n} sessions up again: {baseline.describe()}")
        for restart_ in range(1, args.reconnects + 1):
            await phase(f"reconnect after Prosody's restart {restart_}", restart)
            gc.collect()
            now = MemoryState(n, args.tracemalloc)
            log(f"RSS after the reconnect: {rss(os.getpid()) / 2**20:.1f} MB "
                f"(was {rssAfter / 2**20:.1f} MB)")
            log(f"memory after restart {restart_}: {now.describe()}")
            log(f"  growth since the sessions were up again: {now.growth(baseline)}")
            for line in now.objectGrowth(baseline, args.profileLines // 3):
                log("  " + line)
        if args.trim:
            before = rss(os.getpid())
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)
            log(f"malloc_trim(0): RSS {before / 2**20:.1f} -> {rss(os.getpid()) / 2**20:.1f} MB")
        await defer.gatherResults([s.stop() for s in sessions])

    from twisted.internet import defer

    if args.tracemalloc:
        tracemalloc.start(12)
    try:
        prosody.start()
        task.react(lambda _: defer.Deferred.fromCoroutine(bench()))
    except SystemExit as e:
        if e.code:
            raise
    finally:
        prosody.stop()
        if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            shutil.rmtree(workDir, ignore_errors=True)


class MemoryState:
    """
    Where this process's memory is (C{--inprocess}): RSS, glibc's malloc
    (C{mallinfo2}: in use, free in its heaps, mmapped), CPython's own
    allocator's arenas, the objects C{gc} tracks by type, and, with
    C{--tracemalloc}, a snapshot.
    """

    def __init__(self, sessions: int, traced: bool) -> None:
        import gc
        import tracemalloc
        from collections import Counter

        self.sessions = sessions
        self.rss = rss(os.getpid())
        info = mallinfo()
        self.mallocUsed = info.uordblks
        self.mallocFree = info.fordblks
        self.mallocMapped = info.hblkhd
        self.pymalloc = pymallocStats()
        self.types = Counter(type(o).__qualname__ for o in gc.get_objects())
        self.snapshot = tracemalloc.take_snapshot() if traced else None

    def perSession(self, value: float) -> str:
        return f"{value / self.sessions / 1024:.1f}"

    def describe(self) -> str:
        p = self.pymalloc
        return (f"RSS {self.rss / 2**20:.1f} MB; malloc in use {self.mallocUsed / 2**20:.1f} MB, "
                f"free in its heaps {self.mallocFree / 2**20:.1f} MB, mmapped "
                f"{self.mallocMapped / 2**20:.1f} MB; pymalloc {p['arenas']} arenas of 1 MB, "
                f"{p['used'] / 2**20:.1f} MB in objects, {p['free'] / 2**20:.1f} MB free in "
                f"them")  # fmt: skip

    def growth(self, before: MemoryState) -> str:
        p, q = self.pymalloc, before.pymalloc
        return (f"KB per session: RSS {self.perSession(self.rss - before.rss)}, malloc in use "
                f"{self.perSession(self.mallocUsed - before.mallocUsed)}, malloc free "
                f"{self.perSession(self.mallocFree - before.mallocFree)}, mmapped "
                f"{self.perSession(self.mallocMapped - before.mallocMapped)}, pymalloc arenas "
                f"{self.perSession((p['arenas'] - q['arenas']) * 2**20)} (objects "
                f"{self.perSession(p['used'] - q['used'])}, free "
                f"{self.perSession(p['free'] - q['free'])})")  # fmt: skip

    def objectGrowth(self, before: MemoryState, lines: int) -> list[str]:
        out = []
        grown = self.types.copy()
        grown.subtract(before.types)
        for name, count in grown.most_common(lines):
            if count > 0:
                out.append(f"{count / self.sessions:+.2f} {name} per session")
        if self.snapshot is not None and before.snapshot is not None:
            for stat in self.snapshot.compare_to(before.snapshot, "traceback")[:lines]:
                out.append(f"{stat.size_diff / self.sessions / 1024:+.2f} KB per session "
                           f"({stat.count_diff / self.sessions:+.2f} blocks) at:")
                out.extend("    " + line for line in stat.traceback.format()[-6:])
        return out


def pymallocStats() -> dict[str, int]:
    """
    CPython's small-object allocator: arenas, bytes in objects and free
    in them (C{sys._debugmallocstats}, which writes to fd 2).
    """
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return parsePymalloc(out.read().decode("ascii", "replace"))


def parsePymalloc(text: str) -> dict[str, int]:
    """
    Arenas, bytes in objects and bytes free of C{sys._debugmallocstats}'s
    C{text}.
    """

    def number(label: str) -> int:
        match = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(match.group(1).replace(",", "")) if match else 0

    return {"arenas": number("# arenas allocated current"),
            "used": number("# bytes in allocated blocks"),
            "free": number("# bytes in available blocks")
            + 16384 * int((re.search(r"(\d+) unused pools", text) or [0, "0"])[1])}  # fmt: skip


def mallinfo() -> Any:
    """
    glibc's C{mallinfo2} (all arenas).
    """
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def mallocInUse() -> int:
    """
    Bytes allocated by glibc's malloc and in use (C{mallinfo2}); Python's
    small objects live in its own arenas, not counted here.
    """
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def parseInProcessSettings(pairs: list[str]) -> list[tuple[str, object]]:
    """
    C{--set xmpp.KEY=VALUE} as L{SessionSettings} fields (C{--inprocess}).
    """
    from sipxmpp.xmpp.session import SessionSettings

    fields = SessionSettings.__dataclass_fields__
    out: list[tuple[str, object]] = []
    for (section, key), value in parseSettings(pairs).items():
        name = re.sub(r"_(.)", lambda m: m.group(1).upper(), key)
        if section != "xmpp" or name not in fields:
            raise BenchError(f"--inprocess: {section}.{key} is no session setting")
        kind = type(getattr(SessionSettings(), name))
        out.append((name, value.lower() in ("yes", "true", "1") if kind is bool else kind(value)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10000, help="sessions (default 10000)")
    parser.add_argument("--rate", type=int, default=500, help="REGISTERs per second (500)")
    parser.add_argument("--timeout", type=float, default=1800, help="bound on the run, seconds")
    parser.add_argument("--calls", type=int, default=20, help="calls for the presence latency")
    parser.add_argument("--presences", type=int, default=5,
                        help="presence changes of the contact (default 5)")
    parser.add_argument("--rest", type=float, default=30, help="seconds at rest measured (30)")
    parser.add_argument("--reconnects", type=int, default=1,
                        help="Prosody restarts, each with the gateway's RSS after it (1); the "
                             "last line gives the first one's time")
    parser.add_argument("--down", type=float, default=0.0,
                        help="seconds Prosody stays down at each restart (0)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a gateway setting (repeatable)")
    parser.add_argument("--inprocess", action="store_true",
                        help="the sessions in this process, no gateway: CPU per login")
    parser.add_argument("--rounds", type=int, default=1,
                        help="--inprocess: times the sessions log in again (1)")
    parser.add_argument("--tickets", action="store_true",
                        help="--inprocess: Prosody resumes TLS sessions (no_ticket = false)")
    parser.add_argument("--no-tls-resumption", dest="noResumption", action="store_true",
                        help="--inprocess: never resume a TLS session")
    parser.add_argument("--smacks", action="store_true",
                        help="--inprocess: Prosody offers XEP-0198")
    parser.add_argument("--profile", action="append", default=[], metavar="PHASE",
                        help="cProfile the phase starting with this text (the gateway's: "
                             "storm, reconnect)")
    parser.add_argument("--profile-lines", dest="profileLines", type=int, default=40)
    parser.add_argument("--profile-file", dest="profileFile", default="",
                        help="where to write the profile too (the gateway's: FILE.PHASE)")
    parser.add_argument("--collect-when-down", dest="collectWhenDown", action="store_true",
                        help="--inprocess: gc.collect() once every session is down")
    parser.add_argument("--gateway-gc", dest="gatewayGC", action="store_true",
                        help="--inprocess: the gateway's garbage-collector settings")
    parser.add_argument("--allocators", action="store_true",
                        help="the gateway's malloc and CPython allocator statistics too")
    parser.add_argument("--garbage", action="store_true",
                        help="collect the gateway's garbage after each reconnect and say what "
                             "it was (then the RSS figures are after a full collection)")
    parser.add_argument("--trim", action="store_true",
                        help="--inprocess: malloc_trim(0) after the restarts, RSS after it")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="--inprocess: where the sessions' Python memory is")
    args = parser.parse_args()
    try:
        inProcess(args) if args.inprocess else run(args)
    except BenchError as e:
        raise SystemExit(f"bench/sessions.py: {e}") from None


if __name__ == "__main__":
    stopServersOnTerminate()
    main()

