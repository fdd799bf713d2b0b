"""
Benchmark: bulk provisioning with C{sipxmpp-admin account import}.

Run from the repository root::

    .venv/bin/python bench/provision.py [--accounts 100000] [--no-postgresql]

Issue 21 asks for 100,000 accounts in under a minute (one C{account add}
per account, a process each, took 11 hours). The bench writes a CSV file of
C{--accounts} accounts (AoR, JID, password; every tenth disabled, every
fifth with its own status text), then for each store (SQLite in a
temporary folder; PostgreSQL started on loopback by
L{sipxmpp.testing.postgres}, unless C{--no-postgresql} or it is not
installed) runs the real console command as an operator would:
C{init}, C{account import FILE}, C{account export}, and the import of the
same file once more, which must be refused line by line with nothing
written. Each command's wall time and its CPU (the child's user + system
time) are printed; the export is checked to list every account.

Loopback only; each command is bounded by C{--timeout}.

The last line::

    provision N accounts: import sqlite X s, postgresql Y s (goal 60 s)
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

GOAL = 60.0


def adminCommand() -> list[str]:
    """
    The installed console script next to this Python, else its module.
    """
    script = os.path.join(os.path.dirname(sys.executable), "sipxmpp-admin")
    if os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "sipxmpp.ops.admin"]


def writeAccounts(path: str, count: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
              newline="") as f:  # fmt: skip
        out = csv.writer(f)
        out.writerow(["aor", "jid", "password", "enabled", "status_text"])
        for n in range(count):
            out.writerow([
                f"sip:user{n}@example.test", f"user{n}@example.test", f"pw-{n:08d}-bench",
                "false" if n % 10 == 9 else "true",
                f"on the phone ({n})" if n % 5 == 4 else "",
            ])


class Admin:
    """
    Runs C{sipxmpp-admin} with one store's configuration and times it.
    """

    def __init__(self, folder: str, url: str, timeout: float) -> None:
        self.folder = folder
        self.timeout = timeout
        self.config = os.path.join(folder, "sipxmpp.conf")
        with open(self.config, "w") as f:
            f.write("[sip]\nupstream = sip:127.0.0.1:5070\ndomain = example.test\n"
                    f"[store]\nurl = {url}\nkey_file = {folder}/secret.key\n")  # fmt: skip

    def run(self, *args: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
        """
        Run one command; return it, its wall time and its CPU time.
        """
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        done = subprocess.run([*adminCommand(), "--config", self.config, *args],
                              capture_output=True, text=True, timeout=self.timeout,
                              env=env, cwd=self.folder)  # fmt: skip
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return done, wall, cpu


def measure(name: str, admin: Admin, accounts: str, count: int) -> float:
    """
    init, import, export and a refused re-import on one store; return the
    import's wall time.
    """
    done, _, _ = admin.run("init")
    if done.returncode != 0:
        raise SystemExit(f"{name}: init failed: {done.stderr.strip()}")
    done, importWall, importCPU = admin.run("account", "import", accounts)
    if done.returncode != 0:
        raise SystemExit(f"{name}: import failed ({done.returncode}): {done.stderr[-2000:]}")
    print(f"{name}: import {count} accounts: {importWall:.1f} s wall, "
          f"{importCPU:.1f} s CPU ({1e6 * importWall / count:.0f} us per account)")  # fmt: skip
    done, wall, cpu = admin.run("account", "export")
    exported = max(0, len(done.stdout.splitlines()) - 1)  # less the header row
    if done.returncode != 0 or exported != count:
        raise SystemExit(f"{name}: export listed {exported} of {count} accounts "
                         f"(exit {done.returncode}): {done.stderr[-2000:]}")  # fmt: skip
    print(f"{name}: export {exported} accounts: {wall:.1f} s wall, {cpu:.1f} s CPU")
    done, wall, cpu = admin.run("account", "import", accounts)
    reasons = len([line for line in done.stderr.splitlines() if line.startswith(accounts)])
    if done.returncode != 2:
        raise SystemExit(f"{name}: the second import was not refused (exit {done.returncode})")
    print(f"{name}: the same file again: refused, {reasons} reasons, "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")  # fmt: skip
    return importWall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="upper bound of each command, seconds")  # fmt: skip
    options = parser.parse_args()
    count = options.accounts
    folder = tempfile.mkdtemp(prefix="sipxmpp-provision-")
    try:
        accounts = os.path.join(folder, "accounts.csv")
        writeAccounts(accounts, count)
        print(f"{count} accounts in {accounts} ({os.path.getsize(accounts) / 2**20:.1f} MiB)")
        sqliteFolder = os.path.join(folder, "sqlite")
        os.makedirs(sqliteFolder)
        sqlite = measure("sqlite", Admin(sqliteFolder, f"sqlite:///{sqliteFolder}/store.sqlite",
                                         options.timeout), accounts, count)  # fmt: skip
        postgres = "n/a"
        if options.no_postgresql:
            print("postgresql: left out (--no-postgresql)")
        else:
            from sipxmpp.testing.postgres import PostgresServer, findPostgresBinaries

            try:
                findPostgresBinaries()
            except Exception as e:
                print(f"postgresql: left out: {e}")
            else:
                with ExitStack() as stack:
                    server = PostgresServer()
                    server.start()
                    stack.callback(server.stop)
                    url = server.createDatabase("provision")
                    pgFolder = os.path.join(folder, "postgresql")
                    os.makedirs(pgFolder)
                    wall = measure("postgresql", Admin(pgFolder, url, options.timeout),
                                   accounts, count)  # fmt: skip
                    postgres = f"{wall:.1f} s"
        print(f"provision {count} accounts: import sqlite {sqlite:.1f} s, "
              f"postgresql {postgres} (goal {GOAL:.0f} s)", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    from sipxmpp.testing.process import stopServersOnTerminate

    stopServersOnTerminate()
    main()
