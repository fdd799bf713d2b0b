"""
A real PostgreSQL for tests: a throw-away cluster in a temporary folder,
listening on a free loopback port, stopped by PID.

PostgreSQL refuses to run as root. When the tests run as root (CI does),
the cluster belongs to an unprivileged user -- C{nobody}, or a system user
C{sipxmpp-test} created with C{useradd} when there is no C{nobody} -- and
C{initdb} and C{postgres} are started through C{setpriv}, which execs them
in the same process (so the PID we hold is the server's) and re-arms the
parent-death signal lost when the user changes.

Debian keeps the server binaries out of C{PATH}
(C{/usr/lib/postgresql/VERSION/bin}); the newest version there is used,
else C{initdb} and C{postgres} from C{PATH}. Durability is switched off
(C{fsync=off}): the data is thrown away anyway.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import signal
import time

from twisted.trial.unittest import FailTest, SkipTest

from sipxmpp.testing.ports import LOOPBACK, freeTCPPort
from sipxmpp.testing.process import (
    MissingBinary,
    ServerProcess,
    findBinary,
    isCI,
    pidAlive,
    runCommand,
)

SUPERUSER = "postgres"
UNPRIVILEGED_USERS = ("nobody", "sipxmpp-test")


def findPostgresBinaries() -> tuple[str, str]:
    """
    Return the paths of C{initdb} and C{postgres}.

    @raise MissingBinary: if PostgreSQL's server is not installed.
    """
    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([0-9.]+)/bin", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else ()

    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for folder in folders:
        initdb, postgres = os.path.join(folder, "initdb"), os.path.join(folder, "postgres")
        if os.access(initdb, os.X_OK) and os.access(postgres, os.X_OK):
            return initdb, postgres
    try:
        return findBinary("initdb"), findBinary("postgres")
    except MissingBinary:
        raise MissingBinary(
            "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb and "
            "no initdb on PATH; Debian: apt-get install postgresql)"
        ) from None


def requirePostgres() -> None:
    """
    Skip the calling test when PostgreSQL's server or psycopg is missing;
    fail it under C{CI=true}, where both must be installed.
    """
    reasons = []
    try:
        findPostgresBinaries()
    except MissingBinary as e:
        reasons.append(str(e))
    try:
        import psycopg  # noqa: F401
    except ImportError:
        reasons.append("the psycopg package is not installed (pip install 'psycopg[binary]')")
    if not reasons:
        return
    reason = "; ".join(reasons)
    if isCI():
        raise FailTest(reason + " (CI=true: missing servers fail instead of skipping)")
    raise SkipTest(reason)


def _unprivilegedUser() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    name = UNPRIVILEGED_USERS[-1]
    runCommand(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                name])
    return pwd.getpwnam(name)


class PostgresServer(ServerProcess):
    """
    A PostgreSQL cluster with trust authentication on loopback only.

    @ivar host: the loopback address it listens on.
    @ivar port: its TCP port.
    @ivar dataDir: the cluster's folder.
    """

    name = "postgres"
    startTimeout = 60.0

    def __init__(self, host: str = LOOPBACK, port: int | None = None,
                 baseDir: str | None = None) -> None:
        self.initdbBinary, self.postgresBinary = findPostgresBinaries()
        super().__init__(baseDir, autoPorts=port is None)
        self.host = host
        self.port = port if port is not None else freeTCPPort(host)
        self.dataDir = os.path.join(self.baseDir, "data")
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = _unprivilegedUser()
            os.chown(self.baseDir, self.user.pw_uid, self.user.pw_gid)
        self._databases = 0

    def _asUser(self, args: list[str]) -> list[str]:
        if self.user is None:
            return args
        return [
            findBinary("setpriv"),
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--clear-groups",
            "--pdeathsig=SIGKILL",
            "--",
            *args,
        ]

    def environment(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "HOME": self.baseDir}

    # -- ServerProcess ----------------------------------------------------

    def prepare(self) -> None:
        if os.path.exists(os.path.join(self.dataDir, "PG_VERSION")):
            return
        runCommand(
            self._asUser([
                self.initdbBinary, "-D", self.dataDir, "--username", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
            ]),
            timeout=120.0,
            env=self.environment(),
            cwd=self.baseDir,
        )

    def command(self) -> list[str]:
        return self._asUser([
            self.postgresBinary, "-D", self.dataDir,
            "-c", f"listen_addresses={self.host}",
            "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.baseDir}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=40",
            "-c", "shared_buffers=16MB",
            "-c", "log_min_messages=warning",
        ])

    def isReady(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def choosePorts(self) -> None:
        self.port = freeTCPPort(self.host)

    def stop(self) -> None:
        """
        Fast shutdown (SIGINT: disconnect clients, then exit cleanly), then
        the generic stop, which escalates if the server is still there.
        """
        process = self.process
        if process is not None and pidAlive(process.pid):
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + self.stopTimeout
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.05)
        super().stop()

    # -- helpers ----------------------------------------------------------

    def url(self, database: str) -> str:
        """
        Return the connection URI of C{database} as the superuser.
        """
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def createDatabase(self, prefix: str = "test") -> str:
        """
        Create a new empty database and return its connection URI.
        """
        import psycopg

        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def dropDatabase(self, url: str) -> None:
        """
        Drop the database of C{url} (made by L{createDatabase}),
        disconnecting whoever still uses it.
        """
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
