"""
Run real servers as child processes for tests and the dev stack.

Every server runs in the foreground in its own process group (new session),
so that stopping it signals the whole group (Kamailio's workers, Erlang's
port programs) and a Ctrl-C in the dev stack's terminal reaches only the
dev stack, which then stops its servers in order.  Nothing is left behind:

  - L{ServerProcess.stop} sends SIGTERM to the group, then SIGKILL after a
    bound, and waits until no member of the group is left;
  - every started server is also stopped at interpreter exit (C{atexit});
  - a server started from the main thread gets C{PR_SET_PDEATHSIG}, so the
    kernel kills it if the test runner itself is killed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Generic, TypeVar

from twisted.python.reflect import prefixedMethodNames
from twisted.trial.unittest import FailTest, SkipTest, SynchronousTestCase

from sipxmpp.testing.ports import isTCPPortFree, isUDPPortFree

DEFAULT_START_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 5.0

_PR_SET_PDEATHSIG = 1


class ServerStartError(Exception):
    """
    A server did not become ready; the message ends with its log's tail.
    """


class MissingBinary(Exception):
    """
    A program a launcher needs is not installed.
    """


class CommandError(Exception):
    """
    A helper command (prosodyctl, ejabberdctl, openssl) failed.
    """


def isCI() -> bool:
    """
    Tell whether we run under CI, where a missing server must fail a test
    instead of skipping it.
    """
    return os.environ.get("CI", "").lower() == "true"


def findBinary(name: str) -> str:
    """
    Return the absolute path of program C{name}.

    Debian puts kamailio and ejabberdctl in C{/usr/sbin}, which is not on
    the C{PATH} of every user, so the sbin folders are searched too.

    @raise MissingBinary: if it is nowhere.
    """
    path = os.environ.get("PATH", os.defpath)
    extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
    found = shutil.which(name, path=os.pathsep.join([path, *extra]))
    if found is None:
        raise MissingBinary(f"{name!r} is not installed (searched PATH and sbin)")
    return found


def requireBinaries(*names: str) -> None:
    """
    Skip the calling test if one of the programs C{names} is missing, or
    fail it when the environment says C{CI=true}: CI installs every server,
    so a missing one there is a broken CI script, not a reason to skip.

    @raise SkipTest: locally, when a program is missing.
    @raise FailTest: under CI, when a program is missing.
    """
    missing = []
    for name in names:
        try:
            findBinary(name)
        except MissingBinary:
            missing.append(name)
    if not missing:
        return
    reason = f"required program(s) not installed: {', '.join(missing)}"
    if isCI():
        raise FailTest(reason + " (CI=true: missing servers fail instead of skipping)")
    raise SkipTest(reason)


def logTail(paths: Sequence[str], lines: int = 30) -> str:
    """
    Return the last C{lines} lines of each existing file of C{paths}, each
    under a header naming the file.
    """
    parts = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        tail = "\n".join(data.splitlines()[-lines:])
        parts.append(f"--- tail of {path} ---\n{tail}")
    return "\n".join(parts) if parts else "(no log written)"


def _groupMembers(pgid: int) -> list[int]:
    """
    Return the PIDs of the live (non-zombie) processes of group C{pgid}.

    Zombies are left out: an orphan is reaped by init at its own pace, and
    it no longer runs anything.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # The command name is in parentheses and may contain anything.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def pidAlive(pid: int) -> bool:
    """
    Tell whether process C{pid} exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def groupAlive(pgid: int) -> bool:
    """
    Tell whether any process of group C{pgid} still runs.
    """
    return bool(_groupMembers(pgid))


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _dieWithParent() -> None:
    """
    In the child, before exec: ask the kernel to SIGKILL us when the thread
    that forked us dies, so a killed test runner leaves no server behind.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def spawn(
    args: Sequence[str],
    logPath: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """
    Start C{args} in a new session with stdin from /dev/null and stdout and
    stderr appended to C{logPath}.
    """
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: only arm it
    # from the main thread, which lives as long as the process.
    mainThread = threading.current_thread() is threading.main_thread()
    with open(logPath, "ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_dieWithParent if mainThread else None,
            close_fds=True,
        )


def terminate(process: subprocess.Popen[bytes], timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
    """
    Stop C{process} and every member of its process group: SIGTERM, then
    SIGKILL for whatever is still there after C{timeout} seconds.  Returns
    once the main process is reaped and the group has no live member.
    """
    pgid = process.pid
    for sig, bound in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if process.poll() is not None and not groupAlive(pgid):
                return
            time.sleep(0.05)
    # After SIGKILL only an unkillable (D state) process can remain.
    process.wait(timeout=timeout)


def runCommand(
    args: Sequence[str],
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """
    Run a helper command to completion with a bound on its run time,
    killing its whole process group if it overruns.

    @raise CommandError: if C{check} and it exits non-zero, or on timeout.
    """
    proc = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        raise CommandError(
            f"{' '.join(args)} did not finish within {timeout} s; output:\n{out}"
        ) from None
    result = subprocess.CompletedProcess(list(args), proc.returncode, out, None)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(args)} exited with {proc.returncode}; output:\n{out}")
    return result


class ServerProcess:
    """
    A real server run as a foreground child process.

    Subclasses write their configuration in L{prepare}, give their command
    line in L{command} and say when they are ready in L{isReady}; they may
    do more (create users) in L{afterStart}.  When the ports were chosen
    automatically and the server dies while starting (another process took
    a port in between), L{start} chooses new ones through L{choosePorts}
    and tries again.

    @ivar name: short name used in file names and messages.
    @ivar baseDir: private folder for configuration, data and logs.
    @ivar consoleLog: where the server's stdout and stderr go.
    @ivar workDir: the server's working directory (C{baseDir} by default).
    @ivar process: the running C{Popen}, or L{None}.
    """

    name = "server"
    startTimeout = DEFAULT_START_TIMEOUT
    stopTimeout = DEFAULT_STOP_TIMEOUT
    startAttempts = 3

    _running: ClassVar[set[ServerProcess]] = set()

    def __init__(self, baseDir: str | None = None, autoPorts: bool = True) -> None:
        """
        @param baseDir: the folder for this server's files; a fresh temporary
            one (removed by L{stop}) if L{None}.
        @param autoPorts: whether the ports were chosen here and may be
            chosen again when starting fails.
        """
        self.ownsBaseDir = baseDir is None
        if baseDir is None:
            baseDir = tempfile.mkdtemp(prefix=f"sipxmpp-{self.name}-")
        self.baseDir = os.path.abspath(baseDir)
        os.makedirs(self.baseDir, exist_ok=True)
        self.consoleLog = os.path.join(self.baseDir, f"{self.name}.console.log")
        self.autoPorts = autoPorts
        # The server's working directory; its own folder unless a subclass
        # needs relative paths resolved elsewhere.
        self.workDir = self.baseDir
        self.process: subprocess.Popen[bytes] | None = None

    # -- for subclasses ---------------------------------------------------

    def prepare(self) -> None:
        """
        Write configuration files; called before every start attempt.
        """

    def command(self) -> list[str]:
        """
        Return the command line that runs the server in the foreground.
        """
        raise NotImplementedError()

    def environment(self) -> dict[str, str] | None:
        """
        Return the environment for the server, or L{None} to inherit ours.
        """
        return None

    def isReady(self) -> bool:
        """
        Tell whether the started server accepts work.
        """
        raise NotImplementedError()

    def afterStart(self) -> None:
        """
        Do what needs the running server (create users); called once ready.
        """

    def choosePorts(self) -> None:
        """
        Pick new free ports before another start attempt.
        """

    def logFiles(self) -> list[str]:
        """
        Return the logs whose tail explains a failure, most useful last.
        """
        return [self.consoleLog]

    def listenPorts(self) -> list[tuple[str, str, int]]:
        """
        Return the (C{"tcp"} or C{"udp"}, host, port) the server will bind.

        They are checked before starting: a server that cannot bind may
        keep running without its listener (Prosody does), and then a
        connection test would reach whoever holds the port instead.
        """
        return []

    # -- public API -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """
        The PID of the server's main process (also its process group), or
        L{None} when not started.
        """
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """
        Whether the server's main process is running.
        """
        return self.process is not None and self.process.poll() is None

    def logTail(self, lines: int = 30) -> str:
        """
        Return the tail of this server's logs, for error messages.
        """
        return logTail(self.logFiles(), lines)

    def start(self) -> None:
        """
        Start the server and wait until it is ready (at most
        C{startTimeout} seconds per attempt).

        @raise ServerStartError: if it exits or is not ready in time; the
            server is stopped and the message holds its log's tail.
        """
        if self.running:
            return
        attempts = self.startAttempts if self.autoPorts else 1
        for attempt in range(1, attempts + 1):
            try:
                self._startOnce()
                return
            except _DiedWhileStarting as e:
                # Only a port taken meanwhile is worth another attempt; a
                # broken configuration would fail the same way again.
                if attempt == attempts or not _portProblem(str(e)):
                    raise ServerStartError(str(e)) from None
                self.choosePorts()

    def stop(self) -> None:
        """
        Stop the server (SIGTERM, then SIGKILL after C{stopTimeout}) and
        wait until none of its processes is left.  Safe to call twice.
        """
        process, self.process = self.process, None
        if process is not None:
            try:
                terminate(process, self.stopTimeout)
            finally:
                ServerProcess._running.discard(self)
        if self.ownsBaseDir and not os.environ.get("SIPXMPP_KEEP_TEST_DIRS"):
            shutil.rmtree(self.baseDir, ignore_errors=True)

    # -- internals --------------------------------------------------------

    def _startOnce(self) -> None:
        os.makedirs(self.baseDir, exist_ok=True)
        busy = [
            f"{proto} {host}:{port}"
            for proto, host, port in self.listenPorts()
            if not (isTCPPortFree if proto == "tcp" else isUDPPortFree)(port, host)
        ]
        if busy:
            message = f"{self.name}: port(s) already in use: {', '.join(busy)}"
            # With automatic ports, start() picks new ones and retries.
            if self.autoPorts:
                raise _DiedWhileStarting(message)
            raise ServerStartError(message)
        self.prepare()
        args = self.command()
        with open(self.consoleLog, "ab") as log:
            log.write(f"=== {time.ctime()}: {' '.join(args)}\n".encode())
        self.process = spawn(args, self.consoleLog, self.environment(), self.workDir)
        ServerProcess._running.add(self)
        deadline = time.monotonic() + self.startTimeout
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise _DiedWhileStarting(
                        f"{self.name} exited with status {code} while starting"
                        f" ({' '.join(args)})\n{self.logTail()}"
                    )
                if self.isReady():
                    break
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.name} was not ready within {self.startTimeout} s"
                        f" ({' '.join(args)})\n{self.logTail()}"
                    )
                time.sleep(0.05)
            self.afterStart()
        except BaseException:
            process, self.process = self.process, None
            terminate(process, self.stopTimeout)
            ServerProcess._running.discard(self)
            raise

    @classmethod
    def stopAll(cls) -> None:
        """
        Stop every server still running (at interpreter exit).
        """
        for server in list(cls._running):
            server.stop()


def _portProblem(message: str) -> bool:
    """
    Tell whether a start-up failure looks like a port taken by another
    process (the wording of C{EADDRINUSE} in C, Lua and Erlang).
    """
    lowered = message.lower()
    return "already in use" in lowered or "eaddrinuse" in lowered


class _DiedWhileStarting(Exception):
    """
    The server exited during start-up (maybe a port was taken meanwhile).
    """


atexit.register(ServerProcess.stopAll)


S = TypeVar("S", bound=ServerProcess)


def startForTest(testCase: SynchronousTestCase, server: S) -> S:
    """
    Start C{server} for one test and stop it when the test ends, whether it
    passed or not.

    @return: C{server}, started.
    """
    testCase.addCleanup(server.stop)
    server.start()
    return server


class SharedServer(Generic[S]):
    """
    One server shared by all tests of a test class, for speed.

    Trial has no C{setUpClass}, so the server is started by the first test
    that asks for it and stopped in the cleanup of the class's last test
    (trial runs a class's tests in name order).  If tests run in another
    order or only some of them run, a later test restarts it and
    interpreter exit stops it: never a leftover, at worst a restart.  Tests
    sharing a server must leave it in a state the others accept (e.g. use
    distinct user names).

    Use as a class attribute::

        class T(SynchronousTestCase):
            prosody = SharedServer(ProsodyServer)

            def test_x(self) -> None:
                server = self.prosody.get(self)
    """

    def __init__(self, factory: Callable[[], S]) -> None:
        self.factory = factory
        self._servers: dict[type, S] = {}

    def get(self, testCase: SynchronousTestCase) -> S:
        """
        Return the running server of C{testCase}'s class, starting it if
        needed.
        """
        cls = type(testCase)
        server = self._servers.get(cls)
        if server is None or not server.running:
            if server is not None:
                server.stop()
            server = self.factory()
            self._servers[cls] = server
            try:
                server.start()
            except BaseException:
                del self._servers[cls]
                server.stop()
                raise
        testCase.addCleanup(self._release, testCase)
        return server

    def _release(self, testCase: SynchronousTestCase) -> None:
        cls = type(testCase)
        names = sorted(prefixedMethodNames(cls, "test"))
        if names and testCase._testMethodName == "test" + names[-1]:
            server = self._servers.pop(cls, None)
            if server is not None:
                server.stop()


def stopServersOnTerminate() -> None:
    """
    Make SIGTERM and SIGHUP end this process the way Ctrl-C does, so the
    servers it started are stopped (its C{finally} blocks, then C{atexit}).
    Python's default for SIGTERM ends the process at once and leaves them
    running.  For a bench's or a tool's main; trial owns the signals in
    tests.
    """

    def terminate(number: int, frame: object) -> None:
        raise SystemExit(128 + number)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, terminate)
