"""
The local development stack behind C{make run}.

C{python -m sipxmpp.testing.devstack} starts, on 127.0.0.1 only:

  - Prosody (XMPP, c2s 5222, domain example.test, STARTTLS with a local CA)
    with the demo users alice, bob and carol, all mutual contacts;
  - Kamailio (the registrar, UDP and TCP 5070, domain example.test);
  - with C{--gateway-config FILE}, the gateway itself
    (C{twistd -n sipxmpp --config FILE}, started in the current folder so
    the file's relative paths such as C{run/ca.pem} resolve).

State lives in the run folder (default C{./run}): the CA (C{run/ca.pem},
kept across restarts so clients keep trusting it), Prosody's accounts, the
logs, and C{run/devstack.json} describing what runs where.  It prints how to
point a softphone and an XMPP client at the stack, then waits for Ctrl-C or
SIGTERM and stops everything it started.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from sipxmpp.testing.demo import runDemo
from sipxmpp.testing.gateway import AdminError, runAdmin
from sipxmpp.testing.kamailio import KamailioServer
from sipxmpp.testing.ports import LOOPBACK, isTCPPortFree, isUDPPortFree, tcpAccepting
from sipxmpp.testing.process import (
    MissingBinary,
    ServerProcess,
    ServerStartError,
    findBinary,
    pidAlive,
)
from sipxmpp.testing.prosody import ProsodyServer
from sipxmpp.testing.tls import TestCA

DOMAIN = "example.test"
DEMO_USERS = {
    "alice": "demo-password-alice",
    "bob": "demo-password-bob",
    "carol": "demo-password-carol",
}
# The demo users the gateway acts for; carol is their contact (the watcher).
PROVISIONED = ("alice", "bob")
READY_LINE = "devstack: ready"


def _tcpEndpoints(value: str) -> list[tuple[str, int]]:
    """
    Return the (interface, port) of each C{tcp:PORT[:interface=ADDR]} of a
    space-separated endpoint list from the gateway's configuration.
    """
    endpoints = []
    for endpoint in value.split():
        parts = endpoint.split(":")
        if parts[0] != "tcp" or len(parts) < 2 or not parts[1].isdigit():
            continue
        interface = LOOPBACK
        for option in parts[2:]:
            if option.startswith("interface="):
                interface = option.split("=", 1)[1] or LOOPBACK
        endpoints.append((interface, int(parts[1])))
    return endpoints


class GatewayProcess(ServerProcess):
    """
    The sipxmpp gateway run by twistd in the foreground.

    Ready when every TCP endpoint of its C{[sip] listen} and C{[http]
    listen} settings accepts connections.
    """

    name = "gateway"
    stopTimeout = 10.0

    def __init__(self, configFile: str, baseDir: str, cwd: str) -> None:
        super().__init__(baseDir, autoPorts=False)
        self.configFile = os.path.abspath(configFile)
        # twistd resolves the configuration's relative paths (run/ca.pem)
        # from its working directory: the caller's, not the run folder.
        self.workDir = os.path.abspath(cwd)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.configFile)
        self.endpoints = [
            *_tcpEndpoints(parser.get("sip", "listen", fallback="")),
            *_tcpEndpoints(parser.get("http", "listen", fallback="")),
        ]
        self.upstream = parser.get("sip", "upstream", fallback="")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.twistd = twistd if os.path.exists(twistd) else findBinary("twistd")
        self._startedAt = 0.0

    def command(self) -> list[str]:
        self._startedAt = time.monotonic()
        return [
            self.twistd,
            "-n",
            "--pidfile",
            "",
            "sipxmpp",
            "--config",
            self.configFile,
        ]

    def prepare(self) -> None:
        # The store needs its key and schema, and the demo users accounts
        # (alice and bob; carol is only their contact). Both are kept in the
        # run folder, so this does nothing on later starts.
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.configFile)
        keyFile = parser.get("store", "key_file", fallback="")
        if keyFile and not os.path.exists(os.path.join(self.workDir, keyFile)):
            self._admin("init")
        listed = self._admin("account", "list").stdout
        for user in PROVISIONED:
            if f"sip:{user}@{DOMAIN}\t" not in listed:
                self._admin("account", "add", f"sip:{user}@{DOMAIN}", f"{user}@{DOMAIN}",
                            "--password-stdin", stdin=DEMO_USERS[user] + "\n")

    def _admin(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return runAdmin(self.configFile, args, self.workDir, stdin)
        except AdminError as e:
            raise ServerStartError(str(e)) from None

    def isReady(self) -> bool:
        if not self.endpoints:
            # Nothing to probe: consider it up once it survived a moment.
            return time.monotonic() - self._startedAt > 2.0
        return all(tcpAccepting(host, port) for host, port in self.endpoints)

    def environment(self) -> dict[str, str]:
        return dict(os.environ)


class _Stop(Exception):
    pass


def _onSignal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sipxmpp.testing.devstack",
        description=(
            "Run a local Prosody and Kamailio (and optionally the gateway) on "
            "127.0.0.1 for development; Ctrl-C stops everything."
        ),
    )
    parser.add_argument("--run-dir", default="run", help="state folder (default: ./run)")
    parser.add_argument("--domain", default=DOMAIN, help=f"XMPP and SIP domain ({DOMAIN})")
    parser.add_argument("--xmpp-port", type=int, default=5222, help="Prosody c2s port (5222)")
    parser.add_argument("--sip-port", type=int, default=5070, help="Kamailio UDP+TCP port (5070)")
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=5060,
        help="the gateway's SIP port, for the instructions only (5060)",
    )
    parser.add_argument(
        "--gateway-config",
        metavar="FILE",
        help="also run the gateway: twistd -n sipxmpp --config FILE",
    )
    parser.add_argument("--kamailio-children", type=int, default=2, help="Kamailio workers (2)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    parser.add_argument(
        "--demo",
        action="store_true",
        help="with --gateway-config: place a scripted call, print what a contact saw, stop",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="start, print, and stop at once (to check the set-up)",
    )
    return parser


def _checkPorts(args: argparse.Namespace) -> list[str]:
    problems = []
    if not isTCPPortFree(args.xmpp_port):
        problems.append(f"TCP {LOOPBACK}:{args.xmpp_port} (XMPP) is in use: --xmpp-port")
    if not (isTCPPortFree(args.sip_port) and isUDPPortFree(args.sip_port)):
        problems.append(f"UDP/TCP {LOOPBACK}:{args.sip_port} (Kamailio) is in use: --sip-port")
    return problems


def _instructions(
    args: argparse.Namespace,
    runDir: str,
    caFile: str,
    prosody: ProsodyServer,
    kamailio: KamailioServer,
    gateway: GatewayProcess | None,
) -> str:
    users = ", ".join(f"{u} / {p}" for u, p in DEMO_USERS.items())
    gp = args.gateway_port
    gatewayLine = (
        f"  Gateway   twistd sipxmpp, config {gateway.configFile}\n"
        f"            log: tail -f {gateway.consoleLog}\n"
        if gateway is not None
        else f"  Gateway   not started here: run it with SIP on {LOOPBACK}:{gp}\n"
    )
    return f"""
sipxmpp dev stack is up (state in {runDir})

  XMPP      Prosody on {LOOPBACK}:{prosody.port}, domain {prosody.domain},
            STARTTLS required, certificate from the local CA
            users (password): {users}; all mutual contacts
            log {prosody.logFile}
  Registrar Kamailio on udp+tcp {LOOPBACK}:{kamailio.port}, domain {kamailio.domain},
            no authentication; log {kamailio.consoleLog}
{gatewayLine}  CA        {caFile}
            (gateway: [xmpp] ca_file = {os.path.relpath(caFile)})

Softphone: register through the gateway, not Kamailio directly
  SIP server / outbound proxy {LOOPBACK}:{gp} (UDP or TCP), domain {args.domain},
  user alice or bob, any password (no authentication)
  baresip ~/.baresip/accounts line:
    <sip:alice@{args.domain}>;outbound="sip:{LOOPBACK}:{gp}";regint=600

XMPP client (e.g. Gajim, Psi, Profanity):
  JID alice@{args.domain}, password {DEMO_USERS["alice"]},
  server {LOOPBACK} port {prosody.port}, trust the CA file above
  check: openssl s_client -starttls xmpp -xmpphost {args.domain} \\
           -connect {LOOPBACK}:{prosody.port} -CAfile {caFile} -verify_return_error

Ctrl-C (or SIGTERM) stops everything started here.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the dev stack until Ctrl-C or SIGTERM; return the exit status.
    """
    args = _parser().parse_args(argv)
    for program in ("prosody", "prosodyctl", "kamailio", "openssl"):
        try:
            findBinary(program)
        except MissingBinary as e:
            print(f"devstack: {e}; install prosody, kamailio and openssl (make deps)")
            return 2
    problems = _checkPorts(args)
    if problems:
        print("devstack: cannot start:\n  " + "\n  ".join(problems))
        return 2

    runDir = os.path.abspath(args.run_dir)
    os.makedirs(runDir, exist_ok=True)
    ca = TestCA(os.path.join(runDir, "ca"), "sipxmpp dev stack CA")
    # A stable, well-known path for the gateway's [xmpp] ca_file.
    caFile = os.path.join(runDir, "ca.pem")
    shutil.copyfile(ca.caFile, caFile)

    prosody = ProsodyServer(
        domain=args.domain,
        port=args.xmpp_port,
        baseDir=os.path.join(runDir, "prosody"),
        ca=ca,
        users=DEMO_USERS,
        logLevel=args.log_level,
    )
    prosody.subscribeAll(DEMO_USERS)
    kamailio = KamailioServer(
        domain=args.domain,
        port=args.sip_port,
        baseDir=os.path.join(runDir, "kamailio"),
        children=args.kamailio_children,
        debug=args.log_level == "debug",
    )
    gateway = None
    if args.gateway_config:
        gateway = GatewayProcess(args.gateway_config, os.path.join(runDir, "gateway"), os.getcwd())
        if gateway.upstream and str(args.sip_port) not in gateway.upstream:
            print(
                f"devstack: warning: the gateway's upstream is {gateway.upstream!r},"
                f" but Kamailio listens on port {args.sip_port}"
            )

    started: list[ServerProcess] = []
    stateFile = os.path.join(runDir, "devstack.json")
    previous = {sig: signal.signal(sig, _onSignal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        servers: list[ServerProcess] = [prosody, kamailio]
        for server in servers:
            server.start()
            started.append(server)
        if gateway is not None:
            gateway.start()
            started.append(gateway)
        with open(stateFile, "w") as f:
            json.dump(
                {
                    "domain": args.domain,
                    "caFile": caFile,
                    "xmpp": {
                        "host": LOOPBACK,
                        "port": prosody.port,
                        "pid": prosody.pid,
                        "users": DEMO_USERS,
                    },
                    "sip": {
                        "host": LOOPBACK,
                        "port": kamailio.port,
                        "uri": kamailio.uri,
                        "pid": kamailio.pid,
                    },
                    "gateway": None
                    if gateway is None
                    else {"pid": gateway.pid, "config": gateway.configFile},
                },
                f,
                indent=2,
            )
        print(_instructions(args, runDir, caFile, prosody, kamailio, gateway))
        print(READY_LINE, flush=True)
        if args.demo and gateway is not None:
            status = runDemo(args.domain, prosody.port, caFile, args.gateway_port,
                             DEMO_USERS["carol"])
            raise _Stop("demo over")
        while not args.once:
            for running in started:
                if not running.running:
                    print(f"devstack: {running.name} exited unexpectedly\n{running.logTail()}")
                    status = 1
                    raise _Stop("exit")
            time.sleep(0.5)
    except _Stop as stop:
        if status == 0:
            print(f"\ndevstack: {stop}, stopping")
    except ServerStartError as e:
        print(f"devstack: {e}")
        status = 1
    finally:
        # Ignore further Ctrl-C while stopping: stop() must finish.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        for done in reversed(started):
            pid = done.pid
            done.stop()
            if pid is not None and pidAlive(pid):
                print(f"devstack: {done.name} (pid {pid}) did not stop")
                status = 1
        if os.path.exists(stateFile):
            os.unlink(stateFile)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("devstack: stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
