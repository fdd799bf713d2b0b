"""
A real Kamailio 5.6 as the telco registrar behind the gateway.

Kamailio runs in the foreground (C{kamailio -DD -E}) with the static
C{etc/kamailio.cfg}; listening sockets, worker count, memory and switches
are given on the command line.  It is ready when it answers an OPTIONS over
UDP, which proves that its workers run the routing script.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping

from sipxmpp.testing.ports import LOOPBACK, freeSIPPort, tcpAccepting
from sipxmpp.testing.process import ServerProcess, findBinary
from sipxmpp.testing.templates import etcPath


def sipOptions(host: str, port: int, timeout: float = 0.5) -> int | None:
    """
    Send one OPTIONS over UDP to C{sip:host:port} and return the status
    code of the response, or L{None} if none came within C{timeout}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        localPort = sock.getsockname()[1]
        tag = uuid.uuid4().hex[:10]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{localPort};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{host}>;tag={tag}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {tag}@{host}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(request.encode("ascii"), (host, port))
        try:
            data = sock.recv(65536)
        except OSError:
            return None
    statusLine = data.split(b"\r\n", 1)[0].split()
    if len(statusLine) < 2 or not statusLine[1].isdigit():
        return None
    return int(statusLine[1])


class KamailioServer(ServerProcess):
    """
    Kamailio as an in-memory registrar and proxy for one domain.

    It honours Path on REGISTER and follows it on lookup, Record-Routes
    dialog-forming requests, loose-routes in-dialog ones, relays statefully
    and refuses to forward anywhere but 127.0.0.0/8.

    @ivar domain: the SIP domain it serves.
    @ivar host: the loopback address it listens on.
    @ivar port: its port, for both UDP and TCP.
    @ivar uri: C{sip:HOST:PORT}, e.g. for the gateway's upstream setting.
    @ivar configFile: the configuration in use.
    @ivar users: user name -> password, when digest auth is on.
    """

    name = "kamailio"

    def __init__(
        self,
        domain: str = "example.test",
        host: str = LOOPBACK,
        port: int | None = None,
        baseDir: str | None = None,
        children: int = 2,
        shmMB: int = 64,
        pkgMB: int = 8,
        maxBuffer: int = 262144,
        auth: bool = False,
        users: Mapping[str, str] | None = None,
        pathMode: int = 1,
        debug: bool = False,
        config: str | None = None,
        defines: Iterable[str] = (),
    ) -> None:
        """
        @param port: the UDP and TCP port; a free one if L{None}.
        @param children: worker processes per listening socket (C{-n}).
        @param shmMB: shared memory, MB (C{-m}); raise it for load tests.
        @param pkgMB: private memory per process, MB (C{-M}).
        @param maxBuffer: cap of the UDP receive buffer auto-probe, bytes.
        @param auth: digest-authenticate REGISTER and INVITE (C{WITH_AUTH}).
        @param users: user name -> password for C{auth}.
        @param pathMode: registrar C{path_mode}: 1 stores Path whatever the
            UA supports, 2 answers 420 without "Supported: path".
        @param debug: log every request and reply.
        @param config: the configuration (default: C{etc/kamailio.cfg}).
        @param defines: more C{-A} pre-processor defines.
        """
        super().__init__(baseDir, autoPorts=port is None)
        self.domain = domain
        self.host = host
        self.port = port if port is not None else freeSIPPort(host)
        self.children = children
        self.shmMB = shmMB
        self.pkgMB = pkgMB
        self.maxBuffer = maxBuffer
        self.auth = auth
        self.users = dict(users or {})
        self.pathMode = pathMode
        self.debug = debug
        self.configFile = config or etcPath("kamailio.cfg")
        self.defines = list(defines)
        self.pidFile = os.path.join(self.baseDir, "kamailio.pid")
        self.usersFile = os.path.join(self.baseDir, "kamailio-users.cfg")
        self.binary = findBinary("kamailio")

    @property
    def uri(self) -> str:
        """
        The SIP URI of this proxy.
        """
        return f"sip:{self.host}:{self.port}"

    def prepare(self) -> None:
        if self.auth:
            # Imported by the config's htable init route from the working
            # directory; passwords must not hold a quote or backslash.
            with open(self.usersFile, "w", encoding="utf-8") as f:
                for user, password in sorted(self.users.items()):
                    if any(c in user + password for c in '"\\\n'):
                        raise ValueError(f"unsupported character in credentials of {user!r}")
                    f.write(f'$sht(users=>{user}) = "{password}";\n')

    def command(self) -> list[str]:
        defines = [
            f'SIP_DOMAIN="{self.domain}"',
            f"PATH_MODE={self.pathMode}",
            f"MAX_BUFFER={self.maxBuffer}",
            *(["WITH_AUTH"] if self.auth else []),
            *(["WITH_DEBUG"] if self.debug else []),
            *self.defines,
        ]
        args = [
            self.binary,
            "-DD",  # foreground: the main process is our child
            "-E",  # log to stderr, i.e. the console log
            "-f",
            self.configFile,
            "-l",
            f"udp:{self.host}:{self.port}",
            "-l",
            f"tcp:{self.host}:{self.port}",
            "-n",
            str(self.children),
            "-m",
            str(self.shmMB),
            "-M",
            str(self.pkgMB),
            "-S",  # no SCTP
            "-Y",
            self.baseDir,  # runtime dir, instead of /run/kamailio
            "-w",
            self.baseDir,  # working dir, where import_file looks
            "-P",
            self.pidFile,
        ]
        for define in defines:
            args += ["-A", define]
        return args

    def isReady(self) -> bool:
        return tcpAccepting(self.host, self.port) and sipOptions(self.host, self.port) == 200

    def choosePorts(self) -> None:
        self.port = freeSIPPort(self.host)

    def listenPorts(self) -> list[tuple[str, str, int]]:
        return [("udp", self.host, self.port), ("tcp", self.host, self.port)]
