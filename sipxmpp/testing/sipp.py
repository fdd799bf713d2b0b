"""
Run sipp 3.6 scenarios (Debian's C{sip-tester}) against loopback targets.

Scenarios live in C{tests/integration/scenarios/}; each documents its
parameters: C{-s USER} (the C{[service]} keyword) and C{-key NAME VALUE}
keywords such as C{domain}, C{expires}, C{caller}.  A run is always bounded:
C{-m} calls, C{-timeout} seconds, and a hard kill a little later.  sipp's
local port is always chosen here: its default (5060) is the gateway's.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, isTCPPortFree, isUDPPortFree
from sipxmpp.testing.process import ServerStartError, findBinary, logTail, spawn, terminate

SCENARIO_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "tests",
    "integration",
    "scenarios",
)

# sipp's exit statuses (sipp(1)).
EXIT_ALL_SUCCESSFUL = 0
EXIT_SOME_FAILED = 1
EXIT_NO_CALL = 99

_SCREEN_COUNTER = re.compile(r"^\s*(Successful call|Failed call)\s*\|\s*(\d+)\s*\|\s*(\d+)", re.M)


def scenarioPath(name: str) -> str:
    """
    Return the path of scenario C{name} (with or without C{.xml}); a path
    that exists is returned as is.
    """
    if os.path.exists(name):
        return os.path.abspath(name)
    if not name.endswith(".xml"):
        name += ".xml"
    path = os.path.join(SCENARIO_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no sipp scenario {path}")
    return path


@dataclass
class SippResult:
    """
    The outcome of one sipp run.

    @ivar exitCode: sipp's exit status (0: all calls successful, 1: some
        failed, 99: no call processed; negative: killed by that signal).
    @ivar successful: successful calls, from sipp's final statistics
        (L{None} if sipp printed none).
    @ivar failed: failed calls, likewise.
    @ivar output: sipp's stdout and stderr.
    @ivar errors: the unexpected-message log (C{-trace_err}), if any.
    @ivar messages: the message trace (when run with C{traceMessages}).
    @ivar workDir: where its files are.
    """

    exitCode: int
    successful: int | None
    failed: int | None
    output: str
    errors: str = ""
    messages: str = ""
    workDir: str = ""
    args: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """
        Whether sipp exited 0 with at least one successful call and none
        failed.
        """
        return (
            self.exitCode == EXIT_ALL_SUCCESSFUL and (self.successful or 0) > 0 and self.failed == 0
        )

    def describe(self) -> str:
        """
        Summarise the run for an assertion message.
        """
        return (
            f"sipp exit {self.exitCode}, {self.successful} successful,"
            f" {self.failed} failed\n{' '.join(self.args)}\n"
            f"--- errors ---\n{self.errors[-3000:]}\n"
            f"--- output tail ---\n{self.output[-2000:]}"
        )


def parseStatistics(output: str, statFile: str | None = None) -> tuple[int | None, int | None]:
    """
    Return the cumulative (successful, failed) call counts of a sipp run:
    from the last statistics screen in C{output}, else from the last row
    of the C{-trace_stat} CSV file.
    """
    counts: dict[str, int] = {}
    for match in _SCREEN_COUNTER.finditer(output):
        counts[match.group(1)] = int(match.group(3))
    if len(counts) == 2:
        return counts["Successful call"], counts["Failed call"]
    if statFile and os.path.exists(statFile):
        with open(statFile, encoding="utf-8", errors="replace") as f:
            rows = [line.rstrip("\n").split(";") for line in f if line.strip()]
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            try:
                return (
                    int(last[header.index("SuccessfulCall(C)")]),
                    int(last[header.index("FailedCall(C)")]),
                )
            except (ValueError, IndexError):
                pass
    return None, None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class SippProcess:
    """
    A sipp running in the background (typically a UAS).

    @ivar port: its local SIP port.
    @ivar pid: its process id (also its process group).
    """

    live: set[SippProcess] = set()

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        args: list[str],
        port: int,
        files: dict[str, str],
        workDir: str,
    ) -> None:
        self.process = process
        self.args = args
        self.port = port
        self.pid = process.pid
        self._files = files
        self.workDir = workDir
        SippProcess.live.add(self)

    @property
    def running(self) -> bool:
        """
        Whether sipp still runs.
        """
        return self.process.poll() is None

    def wait(self, timeout: float = 15.0) -> SippResult:
        """
        Wait for sipp to finish by itself (its C{-m} calls done or its
        C{-timeout} reached); kill it after C{timeout} seconds.
        """
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            terminate(self.process)
        return self._result()

    def stop(self) -> SippResult:
        """
        Stop sipp now (SIGTERM to its group, then SIGKILL) and return what
        it did until then.
        """
        if self.running:
            terminate(self.process)
        return self._result()

    def _result(self) -> SippResult:
        SippProcess.live.discard(self)
        output = _read(self._files["output"])
        successful, failed = parseStatistics(output, self._files["stat"])
        return SippResult(
            exitCode=self.process.returncode,
            successful=successful,
            failed=failed,
            output=output,
            errors=_read(self._files["errors"]),
            messages=_read(self._files["messages"]),
            workDir=self.workDir,
            args=self.args,
        )


class SippRunner:
    """
    Runs sipp scenarios from one local address, with files in a folder.

    @ivar host: the local address (and the default target host).
    @ivar workDir: where traces, statistics and output go.
    @ivar transport: sipp's C{-t} mode: C{u1} (UDP) or C{t1} (TCP).
    """

    def __init__(
        self,
        workDir: str | None = None,
        host: str = LOOPBACK,
        transport: str = "u1",
        timeout: float = 10.0,
    ) -> None:
        """
        @param workDir: where sipp's files go; a temporary folder removed
            at exit if L{None}.
        @param timeout: default C{-timeout} of a run, seconds.
        """
        if workDir is None:
            workDir = tempfile.mkdtemp(prefix="sipxmpp-sipp-")
            if not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
                atexit.register(shutil.rmtree, workDir, True)
        self.workDir = os.path.abspath(workDir)
        os.makedirs(self.workDir, exist_ok=True)
        self.host = host
        self.transport = transport
        self.timeout = timeout
        self.binary = findBinary("sipp")
        self._serial = 0
        self._started: list[SippProcess] = []

    def _localPort(self) -> int:
        return freeSIPPort(self.host)

    def _prepare(
        self,
        scenario: str,
        target: str | None,
        service: str | None,
        keys: Mapping[str, object],
        localPort: int,
        calls: int,
        timeout: float | None,
        traceMessages: bool,
        extraArgs: Sequence[str],
        transport: str | None,
    ) -> tuple[list[str], dict[str, str]]:
        self._serial += 1
        stem = os.path.join(
            self.workDir,
            f"{self._serial:03d}-{os.path.basename(scenario).removesuffix('.xml')}",
        )
        files = {
            "output": stem + ".out",
            "stat": stem + ".stat.csv",
            "errors": stem + ".errors.log",
            "messages": stem + ".messages.log",
        }
        args = [
            self.binary,
            "-sf",
            scenarioPath(scenario),
            "-i",
            self.host,
            "-p",
            str(localPort),
            "-t",
            transport or self.transport,
            "-m",
            str(calls),
            "-timeout",
            f"{timeout or self.timeout}s",
            "-nostdin",
            "-trace_err",
            "-error_file",
            files["errors"],
            "-trace_stat",
            "-stf",
            files["stat"],
        ]
        if traceMessages:
            args += ["-trace_msg", "-message_file", files["messages"]]
        if service is not None:
            args += ["-s", service]
        for key, value in keys.items():
            args += ["-key", key, str(value)]
        args += list(extraArgs)
        if target is not None:
            args.append(target)
        return args, files

    def run(
        self,
        scenario: str,
        target: str | None = None,
        service: str | None = None,
        keys: Mapping[str, object] | None = None,
        localPort: int | None = None,
        calls: int = 1,
        timeout: float | None = None,
        traceMessages: bool = False,
        extraArgs: Sequence[str] = (),
        transport: str | None = None,
    ) -> SippResult:
        """
        Run C{scenario} to completion.

        @param target: C{HOST:PORT} to send to (a UAC); L{None} for a UAS.
        @param service: C{-s}, the C{[service]} keyword (a user name).
        @param keys: C{-key} keywords of the scenario.
        @param localPort: sipp's port (default: a free one).
        @param calls: C{-m}, the number of calls before sipp exits.
        @param timeout: C{-timeout} seconds (default: the runner's).
        @param traceMessages: keep every message in C{result.messages}.
        @param extraArgs: more sipp arguments (e.g. C{["-d", "500"]}).
        """
        process = self.start(
            scenario,
            target,
            service,
            keys,
            localPort,
            calls,
            timeout,
            traceMessages,
            extraArgs,
            transport,
            waitBound=False,
        )
        # sipp stops itself at -timeout; the margin covers its shutdown.
        return process.wait((timeout or self.timeout) + 10.0)

    def start(
        self,
        scenario: str,
        target: str | None = None,
        service: str | None = None,
        keys: Mapping[str, object] | None = None,
        localPort: int | None = None,
        calls: int = 1,
        timeout: float | None = None,
        traceMessages: bool = False,
        extraArgs: Sequence[str] = (),
        transport: str | None = None,
        waitBound: bool = True,
    ) -> SippProcess:
        """
        Start C{scenario} in the background (same parameters as L{run});
        with C{waitBound}, return once sipp listens on its port, so a UAS
        is ready for calls.  Stop it with L{SippProcess.stop} or wait for
        it with L{SippProcess.wait}.

        @raise ServerStartError: if sipp exits or does not bind in time.
        """
        port = localPort if localPort is not None else self._localPort()
        args, files = self._prepare(
            scenario,
            target,
            service,
            keys or {},
            port,
            calls,
            timeout,
            traceMessages,
            extraArgs,
            transport,
        )
        process = spawn(args, files["output"], cwd=self.workDir)
        sipp = SippProcess(process, args, port, files, self.workDir)
        self._started.append(sipp)
        if waitBound:
            self._waitBound(sipp, transport or self.transport)
        return sipp

    def _waitBound(self, sipp: SippProcess, transport: str) -> None:
        isFree = isTCPPortFree if transport.startswith("t") else isUDPPortFree
        deadline = time.monotonic() + 10.0
        while isFree(sipp.port, self.host):
            if not sipp.running or time.monotonic() > deadline:
                sipp.stop()
                raise ServerStartError(
                    f"sipp did not bind {self.host}:{sipp.port}\n{' '.join(sipp.args)}\n"
                    + logTail([sipp._files["output"], sipp._files["errors"]])
                )
            time.sleep(0.02)

    # -- the usual scenarios ---------------------------------------------

    def register(
        self,
        registrar: str,
        user: str,
        domain: str = "example.test",
        expires: int = 3600,
        localPort: int | None = None,
        contactUser: str | None = None,
        path: str | None = None,
        password: str | None = None,
        traceMessages: bool = False,
    ) -> SippResult:
        """
        REGISTER C{user@domain} at C{registrar} (C{HOST:PORT}) with the
        Contact C{sip:contactUser@HOST:localPort}; give the port of a UAS
        to be started afterwards so that calls reach it.

        @param path: a Path URI to add, as an edge proxy would (e.g.
            C{sip:127.0.0.1:5060;lr}); the 200 OK must echo it.
        @param password: answer a digest challenge (401) with C{user} and
            this password.
        """
        if path is not None and password is not None:
            raise ValueError("no scenario registers with both Path and digest auth")
        keys: dict[str, object] = {
            "domain": domain,
            "expires": expires,
            "contact_user": contactUser or user,
        }
        scenario, extra = "register", []
        if path is not None:
            scenario, keys["path"] = "register_path", path
        if password is not None:
            scenario, extra = "register_auth", ["-au", user, "-ap", password]
        return self.run(
            scenario,
            registrar,
            service=user,
            keys=keys,
            localPort=localPort,
            traceMessages=traceMessages,
            extraArgs=extra,
        )

    def unregister(self, registrar: str, user: str, domain: str = "example.test") -> SippResult:
        """
        Remove every binding of C{user@domain} (C{Contact: *}, Expires 0).
        """
        return self.run("unregister", registrar, service=user, keys={"domain": domain})

    def answer(
        self,
        user: str,
        localPort: int | None = None,
        busy: bool = False,
        calls: int = 1,
        timeout: float | None = None,
        traceMessages: bool = False,
    ) -> SippProcess:
        """
        Start a UAS for C{user} that answers C{calls} INVITEs with 200 (or
        486 if C{busy}) and then exits.
        """
        return self.start(
            "uas_busy" if busy else "uas",
            service=user,
            localPort=localPort,
            calls=calls,
            timeout=timeout,
            traceMessages=traceMessages,
        )

    def call(
        self,
        proxy: str,
        callee: str,
        domain: str = "example.test",
        caller: str = "caller",
        holdMs: int = 0,
        expectBusy: bool = False,
        calls: int = 1,
        timeout: float | None = None,
        traceMessages: bool = False,
    ) -> SippResult:
        """
        Call C{callee@domain} through C{proxy} (C{HOST:PORT}): INVITE, ACK,
        C{holdMs} of conversation, BYE.  With C{expectBusy}, the call is
        successful when it is rejected with 486.
        """
        return self.run(
            "uac_busy" if expectBusy else "uac",
            proxy,
            service=callee,
            keys={"domain": domain, "caller": caller},
            calls=calls,
            timeout=timeout,
            traceMessages=traceMessages,
            extraArgs=["-d", str(holdMs)],
        )

    def stopAll(self) -> None:
        """
        Stop every sipp this runner started that still runs (use it as a
        test cleanup: C{self.addCleanup(runner.stopAll)}).
        """
        _stopAll(self._started)


def _stopAll(processes: Iterable[SippProcess]) -> None:
    processes = [p for p in processes if p.running]
    # Signal all first, so they shut down in parallel.
    for p in processes:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in processes:
        p.stop()


# Whatever happens to the test, no sipp outlives the interpreter.
atexit.register(lambda: _stopAll(list(SippProcess.live)))
