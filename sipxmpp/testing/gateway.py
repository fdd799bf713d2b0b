"""
The sipxmpp gateway itself as a test server: twistd in a child process with
a configuration written for the test, its store initialised and accounts
provisioned through the real C{sipxmpp-admin}.

Tests that drive blocking tools (sipp) cannot run the gateway in trial's own
reactor, so it runs beside them, like Kamailio and Prosody.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from sipxmpp.testing.ports import (
    LOOPBACK,
    freeSIPPort,
    freeTCPPort,
    isTCPPortFree,
    isUDPPortFree,
)
from sipxmpp.testing.process import ServerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

_T = TypeVar("_T")


class AdminError(RuntimeError):
    """
    C{sipxmpp-admin} failed; the message holds its exit status and stderr.
    """


def runAdmin(configFile: str, args: Sequence[str], cwd: str, stdin: str | None = None,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """
    Run the real C{sipxmpp-admin --config configFile ARGS} in C{cwd} (where
    the file's relative paths resolve).

    @raise AdminError: if it exits non-zero.
    """
    result = subprocess.run(
        [sys.executable, "-m", "sipxmpp.ops.admin", "--config", configFile, *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AdminError(f"sipxmpp-admin {' '.join(args)} exited {result.returncode}: "
                         f"{result.stderr.strip()}")
    return result


class GatewayServer(ServerProcess):
    """
    One gateway on loopback.

    @param upstreamPort: the registrar's port on 127.0.0.1.
    @param upstreamTransport: C{"udp"} or C{"tcp"}.
    @param xmppServer: C{HOST:PORT} of the XMPP server; by default a closed
        loopback port.
    @param caFile: the CA that signed the XMPP server's certificate.
    @param settings: more C{(section, key) -> value} for the file.
    @ivar sipPort: the SIP port (UDP and TCP).
    @ivar httpPort: the ops HTTP port.
    """

    name = "gateway"
    stopTimeout = 10.0

    def __init__(
        self,
        upstreamPort: int,
        upstreamTransport: str = "udp",
        domain: str = "example.test",
        xmppServer: str = "",
        caFile: str = "",
        settings: Mapping[tuple[str, str], str] | None = None,
        baseDir: str | None = None,
    ) -> None:
        super().__init__(baseDir)
        self.upstreamPort = upstreamPort
        self.upstreamTransport = upstreamTransport
        self.domain = domain
        # Without an XMPP server the gateway must still never look one up in
        # DNS (that would leave loopback): point it at a closed local port.
        self.xmppServer = xmppServer or f"{LOOPBACK}:{freeTCPPort()}"
        self.caFile = caFile
        self.settings = dict(settings or {})
        self.configFile = os.path.join(self.baseDir, "sipxmpp.conf")
        self.choosePorts()

    @property
    def address(self) -> str:
        """
        C{127.0.0.1:PORT}, for sipp's target.
        """
        return f"{LOOPBACK}:{self.sipPort}"

    def choosePorts(self) -> None:
        self.sipPort = freeSIPPort()
        self.httpPort = freeTCPPort()

    def listenPorts(self) -> list[tuple[str, str, int]]:
        return [("udp", LOOPBACK, self.sipPort), ("tcp", LOOPBACK, self.sipPort),
                ("tcp", LOOPBACK, self.httpPort)]

    def configText(self) -> str:
        """
        The configuration file this gateway runs with.
        """
        values: dict[tuple[str, str], str] = {
            ("sip", "listen"): f"udp:{self.sipPort}:interface={LOOPBACK} "
                               f"tcp:{self.sipPort}:interface={LOOPBACK}",
            ("sip", "upstream"): f"sip:{LOOPBACK}:{self.upstreamPort};"
                                 f"transport={self.upstreamTransport}",
            ("sip", "domain"): self.domain,
            ("xmpp", "server"): self.xmppServer,
            ("xmpp", "ca_file"): self.caFile,
            ("store", "url"): f"sqlite:///{self.baseDir}/store.sqlite",
            ("store", "key_file"): f"{self.baseDir}/secret.key",
            ("http", "listen"): f"tcp:{self.httpPort}:interface={LOOPBACK}",
            ("log", "level"): "debug",
        }
        values.update(self.settings)
        sections: dict[str, list[str]] = {}
        for (section, key), value in values.items():
            sections.setdefault(section, []).append(f"{key} = {value}")
        return "".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items())

    def prepare(self) -> None:
        with open(self.configFile, "w", encoding="utf-8") as f:
            f.write(self.configText())
        if not os.path.exists(os.path.join(self.baseDir, "secret.key")):
            self.admin("init")

    def environment(self) -> dict[str, str]:
        # Run this source tree's sipxmpp (the plugin only names its module).
        path = os.environ.get("PYTHONPATH", "")
        return {**os.environ, "PYTHONPATH": ROOT + (os.pathsep + path if path else "")}

    def command(self) -> list[str]:
        return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "sipxmpp",
                "--config", self.configFile]

    def isReady(self) -> bool:
        try:
            with urllib.request.urlopen(self._url("/healthz"), timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        """
        Kill the gateway at once (SIGKILL to its process group), as a crash
        would: nothing is flushed, its files stay for the next L{start}.
        """
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            ServerProcess._running.discard(self)
            # Its SIP workers die a moment later; until they have, their
            # sockets hold the ports and a start would move to new ones.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not all(
                (isTCPPortFree if proto == "tcp" else isUDPPortFree)(port, host)
                for proto, host, port in self.listenPorts()
            ):
                time.sleep(0.05)

    def savedState(self) -> list[dict[str, object]]:
        """
        What the gateway last wrote to its store (C{sipxmpp-admin state}).
        """
        reports: list[dict[str, object]] = json.loads(self.admin("state", "--json").stdout)
        return reports

    # --- talking to it ---

    def admin(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """
        Run C{sipxmpp-admin --config FILE ARGS}; raise if it fails.
        """
        return runAdmin(self.configFile, args, self.baseDir, stdin, self.environment())

    def addAccount(self, aor: str, jid: str, password: str, mode: str | None = None) -> None:
        """
        Provision C{aor} as XMPP account C{jid} (works while running).
        """
        extra = ["--mode", mode] if mode else []
        self.admin("account", "add", aor, jid, *extra, "--password-stdin", stdin=password + "\n")

    def _url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.httpPort}{path}"

    def status(self) -> dict[str, object]:
        """
        The gateway's C{/status}: users' telephony and XMPP state.
        """
        with urllib.request.urlopen(self._url("/status"), timeout=5) as response:
            result: dict[str, object] = json.load(response)
            return result

    def telephonyState(self, aor: str) -> str:
        """
        The telephony state C{/status} shows for C{aor}.
        """
        users = self.status()["users"]
        assert isinstance(users, dict)
        user = users.get(aor)
        return str(user["telephony"]) if isinstance(user, dict) else "offline"

    def metrics(self) -> str:
        """
        The gateway's C{/metrics} text.
        """
        with urllib.request.urlopen(self._url("/metrics"), timeout=5) as response:
            return str(response.read().decode("utf-8"))


def waitFor(what: str, probe: Callable[[], _T | None], timeout: float = 10.0,
            interval: float = 0.05) -> _T:
    """
    Poll C{probe} until it returns something true; raise C{AssertionError}
    naming C{what} and the last value after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    value = probe()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} "
                                 f"(last: {value!r})")
        time.sleep(interval)
        value = probe()
    return value
