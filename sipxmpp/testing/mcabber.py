"""
A real mcabber (the Debian console client, 1.1.2) logged in as a user, for
the integration tests: it offers XEP-0146 C{rc#set-status} to the user's
other resources. mcabber is a curses program, so it runs on a
pseudo-terminal whose output is drained and kept; its XML traffic goes to a
trace log the tests can read.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import threading
import time

from sipxmpp.testing.process import findBinary, groupAlive, requireBinaries


class McabberClient:
    """
    One mcabber process, configured by a file of its own.

    @ivar jid: the bare JID it logs in as; C{resource} is its resource.
    @ivar traceFile: mcabber's trace log (XML at level 3).
    """

    def __init__(self, baseDir: str, user: str, domain: str, password: str, host: str,
                 port: int, caFile: str, resource: str = "mcabber", priority: int = 3,
                 message: str = "") -> None:  # fmt: skip
        """
        @param caFile: the CA the server's certificate must chain to.
        @param message: the status message it starts with.
        """
        requireBinaries("mcabber")
        self.binary = findBinary("mcabber")
        self.baseDir = baseDir
        self.jid = f"{user}@{domain}"
        self.resource = resource
        self.configFile = os.path.join(baseDir, "mcabberrc")
        self.traceFile = os.path.join(baseDir, "mcabber.trace")
        self.screenFile = os.path.join(baseDir, "mcabber.screen")
        os.makedirs(baseDir, exist_ok=True)
        lines = [
            f"set jid = {self.jid}",
            f"set password = {password}",
            f"set server = {host}",
            f"set port = {port}",
            f"set resource = {resource}",
            "set disable_random_resource = 1",
            f"set priority = {priority}",
            f"set priority_away = {priority}",
            "set tls = 1",
            f"set ssl_ca = {caFile}",
            f"set message = {message}" if message else "",
            "set autoaway = 0",
            "set iq_version_hide_os = 1",
            "set beep_on_message = 0",
            "set tracelog_level = 3",
            f"set tracelog_file = {self.traceFile}",
        ]
        # mcabber refuses a config file with a password others could read.
        fd = os.open(self.configFile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(line for line in lines if line) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._screen = bytearray()

    def start(self) -> None:
        master, slave = pty.openpty()
        env = dict(os.environ, TERM="xterm", HOME=self.baseDir, LANG="C.UTF-8",
                   XDG_CONFIG_HOME=self.baseDir)  # fmt: skip
        self.process = subprocess.Popen(
            [self.binary, "-f", self.configFile],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=self.baseDir,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        # A full pty would block mcabber: drain it all the time.
        threading.Thread(target=self._drain, name="mcabber-pty", daemon=True).start()

    def _drain(self) -> None:
        master = self._master
        assert master is not None
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            self._screen += data
            del self._screen[:-200000]

    def type(self, text: str) -> None:
        """
        Type C{text} at mcabber's prompt (end a command with C{"\\r"}).
        """
        assert self._master is not None
        os.write(self._master, text.encode())

    def trace(self) -> str:
        """
        Return mcabber's trace log so far.
        """
        try:
            with open(self.traceFile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def screen(self) -> str:
        return bytes(self._screen).decode(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                self.type("/quit\r")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None and not groupAlive(process.pid):
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None
