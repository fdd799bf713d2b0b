"""
A real ejabberd 23.01 for tests.

ejabberd is an Erlang node.  Two things make it safe to run several at once,
as root, from a temporary folder:

  - The node is started with C{erl} directly, not through C{ejabberdctl
    foreground}: that script stays as the parent shell, so the Erlang VM
    would not be our direct child and a killed test runner would orphan it.
    The arguments are those ejabberdctl would use (C{ERL_LIBS} is read from
    the script), minus its C{su ejabberd} for root.
  - Erlang distribution runs without epmd: the node listens on its own
    loopback port (C{ERL_DIST_PORT}, C{-erl_epmd_port} with C{-start_epmd
    false}) and ejabberdctl connects to that port.  No epmd is started, so
    none is left behind and none is shared between instances.  Each node
    has a unique name (C{ejabberd_test_<c2s port>@localhost}) and a random
    cookie passed on the command line, so C{~/.erlang.cookie} is not used.

ejabberdctl (for C{register} and C{add_rosteritem}) runs as root through
the instance's own C{ejabberdctl.cfg}, which sets C{EXEC_CMD=as_current_user}
(the script sources it after choosing C{su}; this overrides that choice).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping

from sipxmpp.testing.ports import LOOPBACK, freePorts, tcpAccepting
from sipxmpp.testing.process import ServerProcess, findBinary, runCommand
from sipxmpp.testing.templates import etcPath, writeFromTemplate
from sipxmpp.testing.tls import ServerCertificate, TestCA


def _erlLibs(ejabberdctl: str) -> str:
    """
    Return the C{ERL_LIBS} that Debian's ejabberdctl sets (where the
    ejabberd applications are installed).
    """
    with open(ejabberdctl, encoding="utf-8", errors="replace") as f:
        match = re.search(r"""^ERL_LIBS=['"]?([^'"\n]+)""", f.read(), re.M)
    if match is None:
        raise RuntimeError(f"cannot find ERL_LIBS in {ejabberdctl}")
    return match.group(1)


# An HTTPS listener serving only BOSH, in the template's listen list.
_BOSH_LISTENER = """\
  -
    port: {port}
    ip: "{host}"
    module: ejabberd_http
    tls: true
    request_handlers:
      /http-bind: mod_bosh"""


class EjabberdServer(ServerProcess):
    """
    ejabberd with one virtual host, users and rosters.

    @ivar domain: the virtual host.
    @ivar host: the address c2s listens on.
    @ivar port: the c2s port (STARTTLS required).
    @ivar distPort: the Erlang distribution port (loopback, no epmd).
    @ivar node: the Erlang node name.
    @ivar caFile: the CA certificate clients must trust.
    @ivar certificate: the server's L{ServerCertificate}.
    @ivar users: user name -> password of the users created so far.
    @ivar httpsPort: the HTTPS port of BOSH (C{/http-bind}), or L{None}.
    @ivar scramHash: C{auth_scram_hash}: "sha" or "sha256".
    @ivar tls12Only: whether c2s speaks TLS 1.2 only.
    """

    name = "ejabberd"
    # The Erlang VM and mnesia take a couple of seconds, more on a busy CI.
    startTimeout = 40.0
    stopTimeout = 10.0

    def __init__(
        self,
        domain: str = "example.test",
        host: str = LOOPBACK,
        port: int | None = None,
        distPort: int | None = None,
        baseDir: str | None = None,
        ca: TestCA | None = None,
        users: Mapping[str, str] | None = None,
        scramHash: str = "sha",
        tls12Only: bool = False,
        logLevel: str = "info",
        template: str | None = None,
        streamManagement: bool = False,
        bosh: bool = False,
    ) -> None:
        """
        @param port: the c2s port; a free one if L{None}.
        @param distPort: the distribution port; a free one if L{None}.
        @param ca: the CA issuing the server certificate (a new one in
            C{baseDir} if L{None}).
        @param users: user name -> password, registered once started.
        @param scramHash: how passwords are stored, so which SCRAM is
            offered: "sha" (SCRAM-SHA-1) or "sha256" (SCRAM-SHA-256).
        @param tls12Only: refuse TLS 1.3 on c2s, where ejabberd's -PLUS
            (tls-unique) is defined.
        @param logLevel: ejabberd's log level (info, debug, ...).
        @param streamManagement: offer XEP-0198 (C{mod_stream_mgmt}): off
            by default, as a client that vanishes stays online while its
            session waits to be resumed.
        @param bosh: serve BOSH (C{mod_bosh}) on an HTTPS listener of its
            own, the certificate also naming C{host} (the URL's host).
        """
        super().__init__(baseDir, autoPorts=port is None and distPort is None)
        self.domain = domain
        self.host = host
        if port is None or distPort is None:
            free = freePorts(2, host)
            port = port if port is not None else free[0]
            distPort = distPort if distPort is not None else free[1]
        self.port = port
        self.distPort = distPort
        self.ca = ca if ca is not None else TestCA(os.path.join(self.baseDir, "ca"))
        self.caFile = self.ca.caFile
        self.scramHash = scramHash
        self.tls12Only = tls12Only
        self.logLevel = logLevel
        self.streamManagement = streamManagement
        self.httpsPort = freePorts(1, host)[0] if bosh else None
        self.template = template or etcPath("ejabberd.yml.in")
        self.configFile = os.path.join(self.baseDir, "ejabberd.yml")
        self.ctlConfigFile = os.path.join(self.baseDir, "ejabberdctl.cfg")
        self.spoolDir = os.path.join(self.baseDir, "spool")
        self.logDir = os.path.join(self.baseDir, "logs")
        self.logFile = os.path.join(self.logDir, "ejabberd.log")
        self.cookie = secrets.token_hex(16)
        self.users: dict[str, str] = {}
        self._pendingUsers = dict(users or {})
        self.certificate: ServerCertificate | None = None
        self.erl = findBinary("erl")
        self.ejabberdctlBinary = findBinary("ejabberdctl")
        self.erlLibs = _erlLibs(self.ejabberdctlBinary)

    @property
    def node(self) -> str:
        """
        The Erlang node name: unique per instance, by its c2s port.
        """
        return f"ejabberd_test_{self.port}@localhost"

    # -- ServerProcess ----------------------------------------------------

    def prepare(self) -> None:
        for d in (self.spoolDir, self.logDir):
            os.makedirs(d, exist_ok=True)
        if self.certificate is None:
            names = [self.domain, self.host] if self.httpsPort else [self.domain]
            self.certificate = self.ca.issue(names, os.path.join(self.baseDir, "certs"))
        writeFromTemplate(
            self.template,
            self.configFile,
            {
                "LOG_LEVEL": self.logLevel,
                "STREAM_MGMT": "  mod_stream_mgmt: {}" if self.streamManagement else "",
                "BOSH_MODULE": "  mod_bosh: {}" if self.httpsPort else "",
                "BOSH_LISTENER": _BOSH_LISTENER.format(port=self.httpsPort, host=self.host)
                if self.httpsPort else "",
                "SCRAM_HASH": self.scramHash,
                "PROTOCOL_OPTIONS": json.dumps(
                    ["no_sslv3", "cipher_server_preference", "no_compression"]
                    + (["no_tlsv1", "no_tlsv1_1", "no_tlsv1_3"] if self.tls12Only else [])
                ),
                "DOMAIN": self.domain,
                "CERT_FILE": self.certificate.chainFile,
                "CA_FILE": self.caFile,
                "HOST": self.host,
                "C2S_PORT": self.port,
            },
        )
        with open(os.path.join(self.baseDir, "inetrc"), "w") as f:
            f.write('{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n')
        with open(self.ctlConfigFile, "w") as f:
            f.write(
                "# Generated by sipxmpp.testing.ejabberd for ejabberdctl.\n"
                "# Run as the caller (root in CI), not via su ejabberd.\n"
                "EXEC_CMD=as_current_user\n"
                f'ERL_OPTIONS="-setcookie {self.cookie}"\n'
                "# Reach the node on its own port: no epmd.\n"
                f"ERL_DIST_PORT={self.distPort}\n"
            )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "HOME": self.baseDir,
                "EJABBERD_CONFIG_PATH": self.configFile,
                "EJABBERD_LOG_PATH": self.logFile,
                "EJABBERD_PID_PATH": os.path.join(self.baseDir, "ejabberd.pid"),
                "ERL_LIBS": self.erlLibs,
                "ERL_INETRC": os.path.join(self.baseDir, "inetrc"),
                "ERL_CRASH_DUMP": os.path.join(self.logDir, "erl_crash.dump"),
                "ERL_CRASH_DUMP_BYTES": "0",
                "ERL_MAX_PORTS": "32000",
                "ERL_MAX_ETS_TABLES": "1400",
                "CONTRIB_MODULES_PATH": os.path.join(self.baseDir, "contrib"),
                "CONTRIB_MODULES_CONF_DIR": os.path.join(self.baseDir, "contrib", "conf"),
            }
        )
        return env

    def command(self) -> list[str]:
        return [
            self.erl,
            "-sname",
            self.node,
            "-setcookie",
            self.cookie,
            "-noinput",
            "+K",
            "true",
            "-erl_epmd_port",
            str(self.distPort),
            "-start_epmd",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "-mnesia",
            "dir",
            f'"{self.spoolDir}"',
            "-s",
            "ejabberd",
        ]

    def isReady(self) -> bool:
        if self.httpsPort is not None and not tcpAccepting(self.host, self.httpsPort):
            return False
        return tcpAccepting(self.host, self.port)

    def afterStart(self) -> None:
        for user, password in self._pendingUsers.items():
            self.register(user, password)
        self._pendingUsers.clear()

    def choosePorts(self) -> None:
        self.port, self.distPort = freePorts(2, self.host)
        if self.httpsPort is not None:
            self.httpsPort = freePorts(1, self.host)[0]

    def listenPorts(self) -> list[tuple[str, str, int]]:
        https = [("tcp", self.host, self.httpsPort)] if self.httpsPort else []
        return [("tcp", self.host, self.port), ("tcp", self.host, self.distPort), *https]

    @property
    def boshURL(self) -> str:
        """
        The BOSH service's URL (the server must have been made with C{bosh}).
        """
        assert self.httpsPort is not None, "ejabberd without bosh=True"
        return f"https://{self.host}:{self.httpsPort}/http-bind"

    def logFiles(self) -> list[str]:
        return [self.consoleLog, os.path.join(self.logDir, "error.log"), self.logFile]

    # -- administration ---------------------------------------------------

    def jid(self, user: str) -> str:
        """
        Return the bare JID of C{user} on this server.
        """
        return f"{user}@{self.domain}"

    def ejabberdctl(self, *args: str) -> str:
        """
        Run an ejabberdctl command against this node and return its output.

        @raise sipxmpp.testing.process.CommandError: if it fails.
        """
        env = dict(os.environ, HOME=self.baseDir)
        return runCommand(
            [
                self.ejabberdctlBinary,
                "--config-dir",
                self.baseDir,
                "--ctl-config",
                self.ctlConfigFile,
                "--config",
                self.configFile,
                "--logs",
                self.logDir,
                "--spool",
                self.spoolDir,
                "--node",
                self.node,
                *args,
            ],
            timeout=60.0,
            env=env,
        ).stdout

    def register(self, user: str, password: str) -> None:
        """
        Create C{user} with ejabberdctl (the server must run; before
        L{start}, the user is created once it runs).
        """
        if not self.running:
            self._pendingUsers[user] = password
            return
        self.ejabberdctl("register", user, self.domain, password)
        self.users[user] = password

    def registeredUsers(self) -> list[str]:
        """
        Return the users ejabberd knows on the virtual host.
        """
        return self.ejabberdctl("registered_users", self.domain).split()

    def subscribe(self, userA: str, userB: str, group: str = "Contacts") -> None:
        """
        Make C{userA} and C{userB} mutual contacts (subscription "both").
        """
        for a, b in ((userA, userB), (userB, userA)):
            self.ejabberdctl("add_rosteritem", a, self.domain, b, self.domain, b, group, "both")

    def roster(self, user: str) -> dict[str, str]:
        """
        Return C{user}'s roster as ejabberd stores it: JID -> subscription.
        """
        items = {}
        for line in self.ejabberdctl("get_roster", user, self.domain).splitlines():
            fields = line.split("\t")
            if len(fields) >= 3:
                items[fields[0]] = fields[2]
        return items
