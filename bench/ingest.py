"""
Benchmark: calls per second through Kamailio with pua_dialoginfo PUBLISHing
every call's dialog state to sipxmpp, against Kamailio alone (issue 15,
item 8), and the PUBLISH/s one sipxmpp process sustains.

Run from the repository root::

    .venv/bin/python bench/ingest.py [--steps 50,100,...] [--seconds S]
                                     [--publish-steps 100,200,...] [--pairs N]
                                     [--pin] [--no-sink] [--profile]

With C{--pin}, Kamailio, sipp and Prosody share CPU 0 and the receiver of
the PUBLISHes (the gateway, or the sink) has CPU 1 to itself, as it would
on a host of its own: then R tells whether the gateway slows Kamailio
down, not how the two share one machine.

Everything runs on 127.0.0.1 and is stopped (by PID) at the end:

  - Prosody with C{carol} and the users of the pairs (see below);
  - the gateway as a pure publisher (C{[sip] upstream} empty,
    C{[ingest] publishers = 127.0.0.1/32}, log level C{info}) with all of
    them provisioned: it logs them in to Prosody and, as publications
    change their telephony state, sends the presence of its own resource
    of each (the real XMPP side; no desktop clients of theirs are online,
    so no remote-control commands are sent);
  - Kamailio "with": C{etc/kamailio-pua.cfg} (2 workers), PUBLISHing to
    the gateway, with C{CTL_SOCKET} so C{kamcmd tm.stats} counts the
    PUBLISHes it sent (its local transactions: pua sends nothing else);
  - Kamailio "alone": the same configuration with C{WITHOUT_PUBLISH}
    (pua_dialoginfo left out): dialogs are still tracked (dlg_manage),
    nothing is published;
  - Kamailio "to a sink" (unless C{--no-sink}): the same configuration
    as "with", PUBLISHing to a third, stateless Kamailio
    (C{bench/kamailio-publish-sink.cfg}) that answers every PUBLISH 200
    at once and keeps nothing: a perfect receiver. Its ramp against
    Kamailio alone gives what publishing costs Kamailio (and the machine
    it shares) whatever receives it, the ceiling of R on this machine.

The calls go round C{--pairs} caller/callee pairs (default 50: pua keeps
its records per user, and two users taking every call would measure a
hash chain, not a telco's traffic), all provisioned on Prosody and in the
gateway. callee-1 ... callee-N register at every Kamailio from the port
of one sipp UAS (C{proxy_bench_ramp_uas.xml}). At each rate of the ramp
the sipp UAC (C{ingest_bench_uac.xml}: the tests' C{uac.xml}, INVITE, 180,
200, ACK, BYE over UDP, no hold, with caller and callee from an injection
file) calls callee-I from caller-I, I in turn, first through Kamailio
"with", then to the sink, then through Kamailio "alone". A step offers C{--seconds} worth of calls (at least 200) and
passes as in bench/proxy.py: under 0.1 % of them failed or unfinished,
and at least 90 % of the offered rate achieved; a failing step is run
once more after a pause (both printed), and the ramp stops when the retry
fails too.

After each "with" step, once the PUBLISHes have stopped coming (at most
10 s), it prints: the PUBLISHes Kamailio sent (C{tm.stats} C{total_local},
counted on Kamailio's side) beside the 7 per answered call pua_dialoginfo
should send (caller Trying, early, confirmed, terminated; callee early,
confirmed, terminated); the gateway's answers by status code (the
C{sipxmpp_sip_publish_total} counters of its C{/metrics}); the
publications lost in the step: sent, less those answered 412 (pua sends
a modification it got 412 for again as a new publication, which is
counted as sent again), less those answered 200; the presence changes
the gateway logged (C{UserPublisher}: "showing ..." as a call starts,
"call over" as it ends: presence it sent to Prosody); whether caller and
callee of every pair are off the phone again in the gateway's C{/status} (waited for at
most 5 s) and how many dialogs Kamailio still tracks (C{kamcmd
dlg.stats_active}): a user left ringing or on the phone with no dialog up
at Kamailio means a publication did not reach the state machine (a
failed call may leave its dialog up, and its users rightly on the
phone); and the CPU of Kamailio (all its processes) and of the gateway in
the step, drain included.

Then a ramp of PUBLISHes straight to the gateway (sipp UAC
C{ingest_bench_publish.xml}: per "call" a new publication "confirmed"
and its SIP-If-Match modification to "terminated", as Kamailio sends
them; rates in PUBLISH/s, C{--publish-steps}). A step passes when every
PUBLISH was answered 200 and at least 90 % of the offered rate was
achieved; its figure is the highest passing rate, with the gateway's CPU
per PUBLISH. One user (carol) takes every publication, so she goes on and
off the phone, and her presence changes, up to once per dialog.

With C{--profile} the gateway runs under cProfile (twistd C{--profile})
for the whole run, which slows it, and its hot spots are printed at the
end.

The last line is always::

    ingest cps ratio kamailio+sipxmpp/kamailio: R (with N cps, alone M cps, publications P/s, lost L)

N and M are the highest passing call rates of the two ramps, R = N/M, P
the PUBLISH/s of the direct ramp, and L the publications lost (sent by
Kamailio, not answered 200 by the gateway) over the passing steps of the
"with" ramp (at and below N); the line before it gives L over every step.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy import (  # bench/proxy.py, beside this file
    FAILURE_LIMIT,
    KEPT_UP,
    MIN_CALLS,
    ProfiledGateway,
    Step,
    cpuTimes,
    samples,
    treeCPU,
)
from sessions import ITERATIONS, password, scramKeys  # bench/sessions.py

from sipxmpp.testing.gateway import GatewayServer
from sipxmpp.testing.kamailio import KamailioPuaServer, KamailioServer, missingModules
from sipxmpp.testing.ports import LOOPBACK, freeSIPPort
from sipxmpp.testing.process import stopServersOnTerminate
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.testing.sipp import SippProcess, SippRunner

DOMAIN = "example.test"
#: The user of the direct PUBLISH ramp.
USERS = {"carol": "carol-pw"}
#: PUBLISHes pua_dialoginfo sends per answered call (caller Trying, early,
#: confirmed, terminated; callee early, confirmed, terminated).
PER_CALL = 7
#: Telephony states that mean a publication still holds the user.
BUSY = ("ringing", "on-the-phone", "on-hold")
PUBLISH_METRIC = "sipxmpp_sip_publish_total"
#: The stateless receiver of the "to a sink" ramp.
SINK_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "kamailio-publish-sink.cfg")


def fail(message: str) -> SystemExit:
    return SystemExit(f"bench/ingest.py: {message}")


def waitUntil(what: str, probe: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError as e:
        return f"? ({e})"
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "?"


class Kamailio(KamailioPuaServer):
    """
    Kamailio with etc/kamailio-pua.cfg (without publishing, or not) and a
    ctl socket, so that C{kamcmd} reads its transaction counters.
    """

    def __init__(self, publishTo: str, ctlSocket: str, publish: bool = True) -> None:
        defines = [f'CTL_SOCKET="unix:{ctlSocket}"'] + ([] if publish else ["WITHOUT_PUBLISH"])
        super().__init__(publishTo, children=2, shmMB=512, maxBuffer=8 * 2**20, defines=defines)
        self.ctlSocket = ctlSocket

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _counter(self, command: str, name: str) -> int | None:
        try:
            result = subprocess.run(["kamcmd", "-s", f"unix:{self.ctlSocket}", command],
                                    capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = re.search(rf"\b{name}:\s*(\d+)", result.stdout)
        return int(found.group(1)) if found else None

    def publishesSent(self) -> int | None:
        """
        The local transactions (pua's PUBLISHes) so far, from C{kamcmd
        tm.stats}; L{None} if it cannot be read.
        """
        return self._counter("tm.stats", "total_local")

    def dialogsUp(self) -> int | None:
        """
        The dialogs Kamailio tracks now (C{kamcmd dlg.stats_active}).
        """
        return self._counter("dlg.stats_active", "all")



def publishAnswers(gateway: GatewayServer) -> dict[str, int]:
    """
    The PUBLISHes the gateway has answered so far, by status code.
    """
    codes: dict[str, int] = {}
    for name, value in samples(gateway.metrics()):
        if name.startswith(PUBLISH_METRIC + "{"):
            found = re.search(r'code="(\d+)"', name)
            code = found.group(1) if found else "?"
            codes[code] = codes.get(code, 0) + int(value)
    return codes


def since(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {code: now[code] - before.get(code, 0) for code in now
            if now[code] != before.get(code, 0)}


class PresenceLog:
    """
    Counts the presence changes the gateway logs (C{UserPublisher}:
    "showing ..." when a call starts, "call over" when it ends): each is
    presence sent to Prosody for the user's gateway resource.
    """

    def __init__(self, gateway: GatewayServer) -> None:
        self.path = gateway.consoleLog
        self.offset = 0

    def changes(self) -> int:
        """
        The presence changes logged since the previous call.
        """
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return 0
        # Only whole lines: the gateway may be writing the last one.
        data = data[: data.rfind(b"\n") + 1]
        self.offset += len(data)
        return sum(1 for line in data.splitlines()
                   if b"UserPublisher#" in line and (b": showing '" in line or b": call over" in line))


def busyUsers(gateway: GatewayServer, users: tuple[str, ...]) -> dict[str, str]:
    """
    Those of C{users} the gateway's /status shows ringing or on the phone.
    """
    status = gateway.status()["users"]
    assert isinstance(status, dict)
    found = {}
    for user in users:
        state = status.get(f"sip:{user}@{DOMAIN}", {}).get("telephony", "offline")
        if state in BUSY:
            found[user] = state
    return found


Watch = dict[str, Callable[[], tuple[float, float]]]


@dataclass(frozen=True)
class Pairs:
    """
    The callers and callees of the call ramps: calls go from caller-I to
    callee-I, I in turn from 1 to the number of pairs (sipp's injection
    file); every callee is registered from the UAS's port, the callers
    call from C{callerPort}.
    """

    count: int
    injection: str
    callerPort: int

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(f"{side}-{i}" for i in range(1, self.count + 1)
                     for side in ("caller", "callee"))  # fmt: skip

    @classmethod
    def write(cls, count: int, folder: str, callerPort: int) -> Pairs:
        path = os.path.join(folder, "pairs.csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("SEQUENTIAL\n")
            for i in range(1, count + 1):
                f.write(f"caller-{i};callee-{i}\n")
        return cls(count, path, callerPort)


def provision(prosody: ProsodyServer, gateway: GatewayServer, users: tuple[str, ...],
              folder: str) -> None:
    """
    Create C{users} on Prosody (account files with their SCRAM keys, as
    bench/sessions.py does) and import them into the gateway, before
    either starts.
    """
    for user in users:
        salt, stored, server = scramKeys(user)
        prosody.writeAccount(user, salt, ITERATIONS, bytes.fromhex(stored),
                             bytes.fromhex(server))  # fmt: skip
    path = os.path.join(folder, "accounts.csv")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as f:
        f.write("aor,jid,password\n")
        for user in users:
            f.write(f"sip:{user}@{DOMAIN},{user}@{DOMAIN},{password(user)}\n")
    gateway.admin("account", "import", path)


@dataclass
class IngestStep:
    """
    What the gateway and Kamailio did in one step of the "with" ramp.
    """

    sent: int | None  # PUBLISHes Kamailio sent (tm.stats), None: unread
    expected: int  # PER_CALL per successful call
    codes: dict[str, int]  # the gateway's answers, by status code
    presence: int  # presence changes the gateway logged
    busy: dict[str, str] = field(default_factory=dict)  # left on the phone
    dialogs: int | None = None  # dialogs Kamailio still tracks after the step

    @property
    def answered(self) -> int:
        return self.codes.get("200", 0)

    @property
    def lost(self) -> int:
        """
        Sent and not answered 200, less those answered 412: pua sends
        those again as new publications (and counts them again).
        """
        sent = self.sent if self.sent is not None else self.expected
        return sent - self.codes.get("412", 0) - self.answered

    def describe(self, step: Step) -> str:
        sent = (f"{self.sent} sent (kamcmd tm.stats)" if self.sent is not None
                else "sent: not read")
        codes = ", ".join(f"{n} {c}" for c, n in sorted(self.codes.items())) or "none"
        busy = ", ".join(f"{u} {s}" for u, s in self.busy.items()) or "none"
        return (f"PUBLISH {sent}, {self.expected} expected ({PER_CALL} per ok call); "
                f"gateway answered {codes} ({self.answered / step.seconds:.0f} 200/s); "
                f"lost {self.lost}; {self.presence} XMPP presence changes; "
                f"left on the phone: {busy} (Kamailio dialogs still up: {self.dialogs})")


def cpuFigures(step: Step, per: int, unit: str) -> str:
    parts = []
    for name, (user, system) in step.cpu.items():
        total = user + system
        parts.append(f"{name} {total:.2f} s ({100 * total / step.seconds:.0f} % of a core, "
                     f"{1000 * total / max(per, 1):.3f} ms per {unit})")
    return "CPU: " + ", ".join(parts)


def callStep(sipp: SippRunner, target: str, pairs: Pairs, rate: int, seconds: float,
             watch: Watch, after: Callable[[], None] | None = None) -> Step:
    """
    One step of calls, each from a caller to its callee (in turn over the
    pairs) through C{target}; C{after} runs before the CPU is read (the
    drain).
    """
    calls = max(MIN_CALLS, int(rate * seconds))
    before = {name: probe() for name, probe in watch.items()}
    began = time.monotonic()
    result = sipp.run(
        "ingest_bench_uac", target, keys={"domain": DOMAIN},
        localPort=pairs.callerPort, calls=calls, timeout=calls / rate + 10,
        extraArgs=["-r", str(rate), "-l", str(calls), "-d", "0", "-inf", pairs.injection],
    )
    elapsed = time.monotonic() - began
    if after is not None:
        after()
    cpu = {}
    for name, probe in watch.items():
        user, system = probe()
        cpu[name] = (user - before[name][0], system - before[name][1])
    return Step(rate, calls, result.successful or 0, result.failed or 0, elapsed, cpu)


def drain(kamailio: Kamailio, gateway: GatewayServer, timeout: float = 10.0) -> None:
    """
    Wait until Kamailio's PUBLISHes are all answered and no more come
    (two equal readings 0.5 s apart), at most C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    last: tuple[int | None, int] | None = None
    while time.monotonic() < deadline:
        now = (kamailio.publishesSent(), sum(publishAnswers(gateway).values()))
        if now == last and (now[0] is None or now[0] <= now[1]):
            return
        last = now
        time.sleep(0.5)


def callRamp(name: str, sipp: SippRunner, kamailio: Kamailio, pairs: Pairs,
             rates: list[int], seconds: float, watch: Watch,
             gateway: GatewayServer | None = None) -> tuple[int, list[tuple[Step, IngestStep | None]]]:
    best = 0
    presence = PresenceLog(gateway) if gateway is not None else None
    steps: list[tuple[Step, IngestStep | None]] = []

    def once(rate: int, retry: bool) -> Step:
        if gateway is None:
            step = callStep(sipp, kamailio.address, pairs, rate, seconds, watch)
            ingest = None
        else:
            assert presence is not None
            sent0 = kamailio.publishesSent()
            codes0 = publishAnswers(gateway)
            presence.changes()
            step = callStep(sipp, kamailio.address, pairs, rate, seconds, watch,
                            lambda: drain(kamailio, gateway))
            sent1 = kamailio.publishesSent()
            codes = since(publishAnswers(gateway), codes0)
            sent = sent1 - sent0 if sent0 is not None and sent1 is not None else None
            ingest = IngestStep(sent, PER_CALL * step.successful, codes, 0)
            deadline = time.monotonic() + 5.0
            ingest.busy = busyUsers(gateway, pairs.users)
            while ingest.busy and time.monotonic() < deadline:
                time.sleep(0.2)
                ingest.busy = busyUsers(gateway, pairs.users)
            ingest.presence = presence.changes()
            ingest.dialogs = kamailio.dialogsUp()
        steps.append((step, ingest))
        suffix = " (retry)" if retry else ""
        print(f"  {name:15s} {step.describe()}{suffix}", flush=True)
        if ingest is not None:
            print(f"  {'':15s}   {ingest.describe(step)}", flush=True)
        print(f"  {'':15s}   {cpuFigures(step, step.successful, 'call')}", flush=True)
        return step

    for rate in rates:
        step = once(rate, False)
        if not step.passed:
            time.sleep(3.0)  # the machine is shared: one retry after a pause
            step = once(rate, True)
        if not step.passed:
            break
        best = rate
        time.sleep(1.0)  # let the backlog drain
    return best, steps


@dataclass
class PublishStep:
    rate: int  # PUBLISH/s offered
    calls: int  # sipp calls, two PUBLISHes each
    successful: int
    failed: int
    seconds: float
    codes: dict[str, int]  # the gateway's answers, by status code
    cpu: tuple[float, float]  # the gateway's user and system seconds
    presence: int = 0  # presence changes the gateway logged
    busy: dict[str, str] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return self.codes.get("200", 0)

    @property
    def offered(self) -> int:
        return 2 * self.calls

    @property
    def achieved(self) -> float:
        return 2 * self.successful / self.seconds

    @property
    def passed(self) -> bool:
        return (self.successful == self.calls and self.answered == sum(self.codes.values())
                and self.achieved >= KEPT_UP * self.rate)

    def describe(self) -> str:
        cpu = sum(self.cpu)
        busy = ", ".join(f"{u} {s}" for u, s in self.busy.items()) or "none"
        codes = ", ".join(f"{n} {c}" for c, n in sorted(self.codes.items())) or "none"
        return (f"{self.rate:5d} PUBLISH/s offered: {self.offered:6d} PUBLISHes "
                f"({self.calls} publications), {self.successful:6d} publications ok, "
                f"{self.failed} failed, {self.calls - self.successful - self.failed} unfinished "
                f"in {self.seconds:5.1f} s = {self.achieved:7.1f} PUBLISH/s achieved; gateway "
                f"answered {codes}, {self.presence} XMPP presence changes, "
                f"CPU {cpu:.2f} s ({100 * cpu / self.seconds:.0f} % of a core, "
                f"{1e6 * cpu / max(self.answered, 1):.0f} us per PUBLISH); "
                f"left on the phone: {busy}  {'pass' if self.passed else 'FAIL'}")


def publishStep(sipp: SippRunner, gateway: GatewayServer, rate: int, seconds: float,
                presence: PresenceLog) -> PublishStep:
    callRate = max(rate / 2, 1)
    calls = max(MIN_CALLS // 2, int(callRate * seconds))
    pid = gateway.pid
    assert pid is not None
    codes0 = publishAnswers(gateway)
    presence.changes()
    cpu0 = cpuTimes(pid)
    began = time.monotonic()
    result = sipp.run(
        "ingest_bench_publish", gateway.address, service="carol", keys={"domain": DOMAIN},
        calls=calls, timeout=calls / callRate + 10,
        extraArgs=["-r", f"{callRate:g}", "-l", str(calls)],
    )
    elapsed = time.monotonic() - began
    cpu1 = cpuTimes(pid)
    codes = since(publishAnswers(gateway), codes0)
    step = PublishStep(rate, calls, result.successful or 0, result.failed or 0, elapsed,
                       codes, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]))
    deadline = time.monotonic() + 5.0
    step.busy = busyUsers(gateway, ("carol",))
    while step.busy and time.monotonic() < deadline:
        time.sleep(0.2)
        step.busy = busyUsers(gateway, ("carol",))
    step.presence = presence.changes()
    return step


def publishRamp(sipp: SippRunner, gateway: GatewayServer, rates: list[int],
                seconds: float) -> tuple[int, list[PublishStep]]:
    best = 0
    steps = []
    presence = PresenceLog(gateway)
    for rate in rates:
        step = publishStep(sipp, gateway, rate, seconds, presence)
        steps.append(step)
        print(f"  publish {step.describe()}", flush=True)
        if not step.passed:
            time.sleep(3.0)
            step = publishStep(sipp, gateway, rate, seconds, presence)
            steps.append(step)
            print(f"  publish {step.describe()} (retry)", flush=True)
        if not step.passed:
            break
        best = rate
        time.sleep(1.0)
    return best, steps


def printProfile(profileFile: str) -> None:
    """
    The gateway's functions with the most own time over the whole run.
    """
    stats = pstats.Stats(profileFile)
    entries = stats.stats  # type: ignore[attr-defined]
    idle = sum(own for (_, _, function), (_, _, own, _, _) in entries.items()
               if "poll" in function and "epoll" in function)
    busy = stats.total_tt - idle  # type: ignore[attr-defined]
    print(f"gateway under cProfile, whole run: {busy:.1f} s busy, {idle:.1f} s in epoll; "
          "top functions by own time (% of busy):")
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in entries.items():
        if not ("poll" in function and "epoll" in function):
            rows.append((own, cumulative, calls,
                         f"{os.path.basename(filename)}:{line}({function})"))
    for own, cumulative, calls, where in sorted(rows, reverse=True)[:25]:
        print(f"  {100 * own / busy:5.1f} % own {100 * cumulative / busy:5.1f} % cum "
              f"{calls:8d} calls  {where}")


def pinTree(pid: int, cpu: int) -> None:
    """
    Move process C{pid}, its threads and its child processes to C{cpu}.
    """
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                os.sched_setaffinity(int(task), {cpu})
            with open(f"/proc/{current}/task/{current}/children", encoding="ascii") as f:
                pids.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue


def registerCallees(sipp: SippRunner, registrar: str, count: int, port: int) -> None:
    """
    Register callee-1 ... callee-COUNT at C{registrar}, all at C{port}.
    """
    result = sipp.run("proxy_bench_register", registrar, service="callee",
                      keys={"domain": DOMAIN, "expires": 3600}, localPort=port, calls=count,
                      timeout=count / 100 + 20, extraArgs=["-r", "100", "-l", "100"])  # fmt: skip
    if result.successful != count:
        raise fail(f"cannot register the callees at {registrar}: {result.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,150,200,300,400,600,800,1200,1600,2400,3200",
                        help="offered call rates, calls/s (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds of calls (or PUBLISHes) per step (default %(default)s)")
    parser.add_argument("--publish-steps", default="100,200,300,400,600,800,1200,1600",
                        help="offered PUBLISH rates straight to the gateway, PUBLISH/s "
                             "(default %(default)s)")
    parser.add_argument("--pairs", type=int, default=50,
                        help="caller/callee pairs the calls go round (default %(default)s)")
    parser.add_argument("--pin", action="store_true",
                        help="run Kamailio, sipp and Prosody on CPU 0 and the receiver of the "
                             "PUBLISHes (the gateway, the sink) on CPU 1: the receiver on a "
                             "core of its own, as it would be on a host of its own")
    parser.add_argument("--no-sink", dest="sink", action="store_false",
                        help="leave out the ramp with pua_dialoginfo PUBLISHing to a "
                             "stateless receiver")
    parser.add_argument("--profile", action="store_true",
                        help="run the gateway under cProfile (all ramps, so slower) and print "
                             "its hot spots")
    options = parser.parse_args()
    rates = [int(r) for r in options.steps.split(",")]
    publishRates = [int(r) for r in options.publish_steps.split(",")]
    missing = missingModules(*KamailioPuaServer.modules, "ctl")
    if missing:
        raise fail(f"Kamailio module(s) not installed: {', '.join(missing)} "
                   "(Debian: kamailio kamailio-presence-modules)")

    if options.pin:
        if (os.cpu_count() or 1) < 2:
            raise fail("--pin needs two CPUs")
        os.sched_setaffinity(0, {0})  # inherited by every process started below
    began = time.monotonic()
    workDir = tempfile.mkdtemp(prefix="sipxmpp-bench-ingest-")
    if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
        atexit.register(shutil.rmtree, workDir, True)
    sipp = SippRunner(os.path.join(workDir, "sipp"), timeout=60)
    profileFile = os.path.join(workDir, "gateway.cprofile")
    with ExitStack() as stack:
        stack.callback(sipp.stopAll)
        prosody = ProsodyServer(users=USERS, baseDir=os.path.join(workDir, "prosody"))
        stack.callback(prosody.stop)
        prosody.prepare()
        uasPort, callerPort = freeSIPPort(), freeSIPPort()
        pairs = Pairs.write(options.pairs, workDir, callerPort)
        gatewayClass: Callable[..., GatewayServer] = GatewayServer
        if options.profile:
            gatewayClass = lambda **kwargs: ProfiledGateway(profileFile, **kwargs)  # noqa: E731
        gateway = gatewayClass(
            upstreamPort=0,
            xmppServer=f"{prosody.host}:{prosody.port}",
            caFile=prosody.caFile,
            baseDir=os.path.join(workDir, "gateway"),
            settings={
                ("sip", "upstream"): "",
                ("ingest", "publishers"): f"{LOOPBACK}/32",
                ("xmpp", "command_timeout"): "5",
                ("xmpp", "reconnect_max_delay"): "2",
                ("log", "level"): "info",
            },
        )
        gateway.prepare()  # provisioned before it starts: it loads them then
        for user, secret in USERS.items():
            gateway.addAccount(f"sip:{user}@{DOMAIN}", f"{user}@{DOMAIN}", secret)
        provision(prosody, gateway, pairs.users, workDir)
        prosody.start()
        stack.callback(gateway.stop)
        gateway.start()
        if options.pin:
            assert gateway.pid is not None
            pinTree(gateway.pid, 1)
        publishTo = f"sip:{LOOPBACK}:{gateway.sipPort}"
        withPua = Kamailio(publishTo, os.path.join(workDir, "with.ctl"))
        stack.callback(withPua.stop)
        withPua.start()
        alone = Kamailio(publishTo, os.path.join(workDir, "alone.ctl"), publish=False)
        stack.callback(alone.stop)
        alone.start()

        sink: tuple[KamailioServer, Kamailio] | None = None
        if options.sink:
            receiver = KamailioServer(config=SINK_CONFIG, children=2,
                                      baseDir=os.path.join(workDir, "sink"))
            stack.callback(receiver.stop)
            receiver.start()
            if options.pin:
                assert receiver.pid is not None
                pinTree(receiver.pid, 1)
            toSink = Kamailio(receiver.uri, os.path.join(workDir, "tosink.ctl"))
            stack.callback(toSink.stop)
            toSink.start()
            sink = (receiver, toSink)

        for kamailio in (withPua, alone) + ((sink[1],) if sink else ()):
            registerCallees(sipp, kamailio.address, pairs.count, uasPort)
        uas: SippProcess = sipp.start("proxy_bench_ramp_uas", service="callee",
                                      localPort=uasPort, calls=10**8, timeout=3600)

        print(f"sipp {version(['sipp', '-v'])}; {version(['kamailio', '-v'])} (2 workers each); "
              f"Prosody {prosody.prosodyBinary}; Python {platform.python_version()}; "
              f"gateway pid {gateway.pid} (pure publisher, log level info)")
        if options.pin:
            print("pinned: Kamailio, sipp and Prosody on CPU 0; the gateway and the sink on CPU 1")
        print(f"{os.cpu_count()} CPUs, load average before: "
              + " ".join(f"{x:.2f}" for x in os.getloadavg())
              + " (everything else running on the machine competes with the ramps)")
        print(f"{options.seconds:g} s per step, at least {MIN_CALLS} calls; a call step passes "
              f"under {100 * FAILURE_LIMIT:g} % failed and at {100 * KEPT_UP:g} % of the rate")

        gatewayPid, withPid, alonePid = gateway.pid, withPua.pid, alone.pid
        assert gatewayPid is not None and withPid is not None and alonePid is not None
        print("kamailio+sipxmpp (pua_dialoginfo PUBLISHing to the gateway):", flush=True)
        withBest, withSteps = callRamp(
            "kamailio+sipxmpp", sipp, withPua, pairs, rates, options.seconds,
            {"kamailio": lambda: treeCPU(withPid), "gateway": lambda: cpuTimes(gatewayPid)},
            gateway)
        sinkBest = None
        if sink is not None:
            sinkPid = sink[0].pid
            assert sinkPid is not None
            print("kamailio+sink (pua_dialoginfo PUBLISHing to a stateless Kamailio that "
                  "answers 200):", flush=True)
            sinkBest, _ = callRamp(
                "kamailio+sink", sipp, sink[1], pairs, rates, options.seconds,
                {"kamailio": lambda: treeCPU(sink[1].pid or 0),
                 "sink": lambda: treeCPU(sinkPid)})
        print("kamailio alone (no pua_dialoginfo):", flush=True)
        aloneBest, _ = callRamp("kamailio", sipp, alone, pairs, rates, options.seconds,
                                {"kamailio": lambda: treeCPU(alonePid)})
        ingests = [(s, i) for s, i in withSteps if i is not None]
        lostAll = sum(i.lost for _, i in ingests)
        lostPassed = sum(i.lost for s, i in ingests if s.passed and s.rate <= withBest)
        # A failed call may leave its dialog up at Kamailio (no BYE): its
        # users are on the phone, rightly.
        stuck = sorted({u for _, i in ingests if i.dialogs == 0 for u in i.busy})
        print(f"publications lost over the kamailio+sipxmpp ramp: {lostPassed} in the passing "
              f"steps, {lostAll} in all; users left on the phone after a step with no dialog "
              f"up at Kamailio: "
              f"{', '.join(stuck) or 'none'}")
        atBest = [(s, i) for s, i in ingests if s.passed and s.rate == withBest]
        if atBest:
            s, i = atBest[-1]
            print(f"at {withBest} cps the gateway answered {i.answered / s.seconds:.0f} PUBLISH/s "
                  f"({100 * (sum(s.cpu['gateway']) / s.seconds):.0f} % of a core)")

        print("PUBLISH straight to the gateway (sipp, new publication + SIP-If-Match "
              "modification per dialog):", flush=True)
        publishBest, publishSteps = publishRamp(sipp, gateway, publishRates, options.seconds)
        best = [p for p in publishSteps if p.passed and p.rate == publishBest]
        if best:
            p = best[-1]
            print(f"one sipxmpp process sustains {publishBest} PUBLISH/s: "
                  f"{1e6 * sum(p.cpu) / max(p.answered, 1):.0f} us gateway CPU per PUBLISH there")
        else:
            print("one sipxmpp process: no PUBLISH step passed")
        uas.stop()
        if options.profile:
            gateway.stop()
            printProfile(profileFile)
    print(f"total {time.monotonic() - began:.0f} s; load average after: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ratio = withBest / aloneBest if aloneBest else 0.0
    if sinkBest is not None:
        sinkRatio = sinkBest / aloneBest if aloneBest else 0.0
        print(f"publishing alone, to a receiver that does nothing: kamailio+sink/kamailio "
              f"{sinkRatio:.2f} ({sinkBest} cps): the most R can be on this machine")
    print(f"ingest cps ratio kamailio+sipxmpp/kamailio: {ratio:.2f} (with {withBest} cps, "
          f"alone {aloneBest} cps, publications {publishBest}/s, lost {lostPassed})")


if __name__ == "__main__":
    stopServersOnTerminate()
    main()
