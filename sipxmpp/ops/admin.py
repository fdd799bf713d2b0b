"""
C{sipxmpp-admin}: provision accounts and look at the store.

Reads C{[store]} (and, for C{account check}, C{[xmpp]}) from the same
configuration file as twistd. Secrets are read from a terminal prompt or
from standard input (C{--password-stdin}), never from the command line,
and are never printed.

Exit status, for scripts::

   0  success
   1  error (configuration, store unreachable, wrong key, ...)
   2  usage error (unknown command or option, malformed AoR, JID, mode, text)
   3  not found (no account for the AoR)
   4  already exists (account, JID, key file, or a store of another key)
   5  account check: the XMPP login failed

C{account import FILE} reports every bad line of FILE on standard error
(C{FILE:LINE: reason}) and exits with 2, having stored nothing.

Messages go to standard error as one line, C{sipxmpp-admin: error: ...};
results go to standard output.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO, TypeVar

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.failure import Failure

from sipxmpp import __version__
from sipxmpp.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, loadSettings
from sipxmpp.ops.statereport import describeReports
from sipxmpp.store.accounts import AccountsRejected
from sipxmpp.store.accountwatch import CHANNEL
from sipxmpp.store.addresses import InvalidAddress, normaliseAoR, parseBareJID
from sipxmpp.store.errors import (
    AccountExists,
    AccountNotFound,
    AlreadyInitialised,
    KeyFileExists,
    StoreError,
)
from sipxmpp.store.opening import Store, initialiseStore, openStore
from sipxmpp.store.records import AccountRecord
from sipxmpp.xmpp.accounts import MODES
from sipxmpp.xmpp.endpoints import canonicalServer

T = TypeVar("T")

OK = 0
ERROR = 1
USAGE = 2
NOT_FOUND = 3
EXISTS = 4
CHECK_FAILED = 5

PROGRAM = "sipxmpp-admin"


class Exit(Exception):
    """
    End the command with C{status} after printing C{message} on stderr.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- command line ---


def _modeOption(value: str) -> str:
    if value not in MODES:
        raise usage.UsageError(f"--mode must be one of {', '.join(MODES)}, not {value!r}")
    return value


class _Interspersed(usage.Options):
    """
    Options that may follow the positional arguments (C{account add AOR JID
    --mode resource}); Twisted's parser otherwise stops at the first
    positional argument.
    """

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if options is None else options)
        flags: list[str] = []
        positional: list[str] = []
        while args:
            arg = args.pop(0)
            if arg == "--":
                positional += args
                break
            if arg.startswith("--") and len(arg) > 2:
                flags.append(arg)
                if "=" not in arg and arg[2:] + "=" in self.longOpt and args:
                    flags.append(args.pop(0))
            elif arg.startswith("-") and len(arg) == 2:
                flags.append(arg)
                if arg[1] + ":" in self.shortOpt and args:
                    flags.append(args.pop(0))
            else:
                positional.append(arg)
        super().parseOptions([*flags, "--", *positional] if positional else flags)


class _AoROnly(_Interspersed):
    def parseArgs(self, aor: str) -> None:  # type: ignore[override]
        self["aor"] = aor


class _PasswordOptions(_Interspersed):
    optFlags = [
        ["password-stdin", None,
         "Read the XMPP password from standard input (one line) instead of prompting."],
    ]


def _serverOption(value: str) -> str | None:
    """
    A per-account XMPP server: C{default} (L{None}) or a form of
    L{canonicalServer}.
    """
    if value.strip().lower() == "default":
        return None
    try:
        return canonicalServer(value)
    except ValueError as e:
        raise usage.UsageError(f"{e}, or default for [xmpp] server") from None


class AddOptions(_PasswordOptions):
    synopsis = ("SIP_AOR JID [--mode MODE] [--status-text TEXT] [--server SERVER] "
                "[--password-stdin]")
    longdesc = (
        "Provision an account: the user with SIP address of record SIP_AOR logs in to "
        "XMPP as the bare JID. The password is prompted for (twice), or read from "
        "standard input with --password-stdin; it is never an argument."
    )
    optFlags = [*_PasswordOptions.optFlags, ["disabled", None, "Add the account disabled."]]
    optParameters = [
        ["mode", None, None, "remote-control or resource (default: [xmpp] mode).", _modeOption],
        ["status-text", None, None, "Status text during a call (default: [xmpp] status_text)."],
        ["ringing-text", None, None, "Status text while ringing (default: [xmpp] ringing_text)."],
        ["hold-text", None, None, "Status text while on hold (default: [xmpp] hold_text)."],
        ["server", None, None, "The user's own XMPP server: HOST:PORT (STARTTLS), "
         "tls:HOST:PORT (Direct TLS), a BOSH URL https://HOST:PORT/PATH or srv (DNS SRV "
         "of the JID's domain); default: [xmpp] server.", _serverOption],
    ]

    def parseArgs(self, aor: str, jid: str) -> None:  # type: ignore[override]
        self["aor"] = aor
        self["jid"] = jid


class ListOptions(_Interspersed):
    synopsis = "[--json]"
    longdesc = ("List the accounts, one per line: AOR, JID, MODE, enabled|disabled, "
                "XMPP server (tab-separated).")
    optFlags = [["json", None, "Print a JSON array instead."]]


class ShowOptions(_AoROnly):
    synopsis = "SIP_AOR [--json]"
    longdesc = "Show one account (never its secret)."
    optFlags = [["json", None, "Print a JSON object instead."]]


class RemoveOptions(_AoROnly):
    synopsis = "SIP_AOR"
    longdesc = "Remove an account."


class EnableOptions(_AoROnly):
    synopsis = "SIP_AOR"
    longdesc = "Enable an account: the gateway logs in for this user again."


class DisableOptions(_AoROnly):
    synopsis = "SIP_AOR"
    longdesc = "Disable an account: the gateway no longer logs in for this user."


class SetPasswordOptions(_PasswordOptions):
    synopsis = "SIP_AOR [--password-stdin]"
    longdesc = "Replace an account's XMPP password (prompted for, or from standard input)."

    def parseArgs(self, aor: str) -> None:  # type: ignore[override]
        self["aor"] = aor


def _onOff(value: str) -> bool:
    word = value.strip().lower()
    if word in ("on", "yes", "true"):
        return True
    if word in ("off", "no", "false"):
        return False
    raise usage.UsageError(f"expected on or off, not {value!r}")


class SetBackpublishOptions(_Interspersed):
    synopsis = "SIP_AOR on|off"
    longdesc = (
        "Let the user's XMPP presence go back to SIP ([backpublish]), or opt the user out: "
        "SIP watchers are refused (403; live subscriptions end with reason=rejected) and "
        "in publish mode the user's publication is removed. A running gateway follows "
        "within seconds."
    )

    def parseArgs(self, aor: str, state: str) -> None:  # type: ignore[override]
        self["aor"] = aor
        self["backpublish"] = _onOff(state)


class SetServerOptions(_Interspersed):
    synopsis = "SIP_AOR tls:HOST:PORT|HOST:PORT|https://HOST:PORT/PATH|srv|default"
    longdesc = (
        "Where the user's XMPP session connects, for a user on another XMPP server: "
        "tls:HOST:PORT (Direct TLS, XEP-0368), HOST:PORT (STARTTLS), a BOSH URL "
        "https://HOST:PORT/PATH (XEP-0206; its certificate is verified for the URL's host), "
        "srv (DNS SRV of the JID's domain, whatever [xmpp] server says) or default "
        "([xmpp] server). Otherwise the certificate is verified for the JID's domain. A running "
        "gateway logs the user in there again within seconds."
    )

    def parseArgs(self, aor: str, server: str) -> None:  # type: ignore[override]
        self["aor"] = aor
        self["server"] = _serverOption(server)


class CheckOptions(_AoROnly):
    synopsis = "SIP_AOR [--timeout SECONDS] [--wait SECONDS]"
    longdesc = (
        "Log in to XMPP as the account (resource from [xmpp] resource, negative "
        "priority), report success or the exact failure, and which of the user's "
        "online resources offer remote control (XEP-0146 set-status)."
    )
    optParameters = [
        ["timeout", None, 30.0, "Give up logging in after SECONDS.", float],
        ["wait", None, 2.0, "Collect the user's resources for SECONDS after login.", float],
    ]


#: The fields of an import file; C{aor}, C{jid} and C{password} are required.
IMPORT_FIELDS = (
    "aor", "jid", "password", "mode", "status_text", "ringing_text", "hold_text", "enabled",
    "backpublish", "xmpp_server",
)
#: The fields of an export (no secret).
EXPORT_FIELDS = (
    "aor", "jid", "mode", "status_text", "ringing_text", "hold_text", "enabled",
    "backpublish", "xmpp_server", "created_at", "updated_at",
)
FORMATS = ("csv", "jsonl")


def _formatOption(value: str) -> str:
    if value not in FORMATS:
        raise usage.UsageError(f"--format must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


class ImportOptions(_Interspersed):
    synopsis = "FILE [--format csv|jsonl] [--dry-run]"
    longdesc = (
        "Provision many accounts at once from FILE ('-' for standard input): CSV with a "
        "header row, or JSON lines (one object per line), told apart by the extension "
        "(.csv, .jsonl, .ndjson, .json) or else by the content. Fields: aor, jid, password "
        "(required), mode, status_text, ringing_text, hold_text, enabled and backpublish "
        "(true/false; default true), xmpp_server (HOST:PORT, tls:HOST:PORT, a BOSH URL or "
        "srv); an "
        "empty or missing field takes the default. All or nothing: "
        "every bad line is reported as FILE:LINE: reason on standard error and nothing "
        "is stored (exit status 2). The file holds passwords: a warning is printed when "
        "other users can read it."
    )
    optFlags = [["dry-run", None, "Check the file (and against the store), store nothing."]]
    optParameters = [
        ["format", None, None, "csv or jsonl (default: from the extension or content).",
         _formatOption],
    ]

    def parseArgs(self, path: str) -> None:  # type: ignore[override]
        self["file"] = path


class ExportOptions(_Interspersed):
    synopsis = "[--format csv|jsonl]"
    longdesc = (
        "Write every account to standard output, as CSV with a header row (default) or "
        "JSON lines, without any secret: " + ", ".join(EXPORT_FIELDS) + "."
    )
    optParameters = [["format", None, "csv", "csv or jsonl.", _formatOption]]


class AccountOptions(usage.Options):
    synopsis = "COMMAND [options]"
    longdesc = "Manage provisioned accounts."
    subCommands = [
        ["add", None, AddOptions, "Provision an account."],
        ["list", None, ListOptions, "List the accounts."],
        ["show", None, ShowOptions, "Show one account."],
        ["remove", None, RemoveOptions, "Remove an account."],
        ["enable", None, EnableOptions, "Enable an account."],
        ["disable", None, DisableOptions, "Disable an account."],
        ["set-password", None, SetPasswordOptions, "Replace an account's password."],
        ["set-backpublish", None, SetBackpublishOptions,
         "Let the user's presence go back to SIP (on) or not (off)."],
        ["set-server", None, SetServerOptions, "Give the user an XMPP server of its own."],
        ["check", None, CheckOptions, "Log in to XMPP as the account and report."],
        ["import", None, ImportOptions, "Provision accounts from a CSV or JSON lines file."],
        ["export", None, ExportOptions, "Write every account (no secrets) as CSV or JSON."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "expected an account command: add, list, show, remove, enable, disable, "
                "set-password, set-backpublish, set-server, check, import or export"
            )


class InitOptions(usage.Options):
    synopsis = ""
    longdesc = (
        "Create the key file ([store] key_file, mode 0600; an existing one is never "
        "overwritten) and the store's schema."
    )


class StateOptions(_Interspersed):
    synopsis = "[--json]"
    longdesc = (
        "Show each user's telephony and XMPP state as the gateways last saved it "
        "(runtime state tables)."
    )
    optFlags = [["json", None, "Print a JSON array instead."]]


class AdminOptions(usage.Options):
    synopsis = "[--config FILE] COMMAND [options]"
    longdesc = (
        "Administer the sipxmpp store. Exit status: 0 ok, 1 error, 2 usage, "
        "3 not found, 4 already exists, 5 XMPP check failed."
    )
    optParameters = [
        ["config", "c", DEFAULT_CONFIG_PATH, "Configuration file (the one twistd uses)."],
    ]
    subCommands = [
        ["init", None, InitOptions, "Create the key file and the schema."],
        ["account", None, AccountOptions, "Manage accounts."],
        ["state", None, StateOptions, "Show the saved runtime state."],
    ]

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"{PROGRAM} (sipxmpp) {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("expected a command: init, account or state")


# --- helpers ---


def _now(d: Deferred[T]) -> T:
    """
    Return the result of a Deferred that already fired (the admin command
    uses the synchronous runner), raising its failure.
    """
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not results:
        raise RuntimeError("the store answered asynchronously")
    return results[0]


def _readPassword(options: usage.Options, stdin: TextIO, confirm: bool = True) -> str:
    if options["password-stdin"]:
        line = stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            raise Exit(USAGE, "no password on standard input")
        return line
    if not stdin.isatty():
        raise Exit(
            USAGE,
            "standard input is not a terminal to prompt for the password; "
            "use --password-stdin to read it from standard input",
        )
    password = getpass.getpass("XMPP password: ")
    if confirm and getpass.getpass("XMPP password (again): ") != password:
        raise Exit(USAGE, "the passwords do not match")
    return password


def _recordDict(record: AccountRecord) -> dict[str, Any]:
    return {
        "aor": record.aor,
        "jid": record.jid,
        "mode": record.mode,
        "status_text": record.statusText,
        "ringing_text": record.ringingText,
        "hold_text": record.holdText,
        "enabled": record.enabled,
        "backpublish": record.backpublish,
        "xmpp_server": record.server,
        "created_at": record.createdAt,
        "updated_at": record.updatedAt,
    }


def _missing(failure: Failure) -> None:
    failure.trap(AccountNotFound)
    return None


def _notifyGateways(store: Store) -> None:
    """
    Tell running gateways that accounts changed (PostgreSQL NOTIFY; they
    LISTEN). On SQLite the gateways find the change by their periodic
    check, within seconds; so do they on PostgreSQL if this fails.
    """
    if store.database.backend.name != "postgresql":
        return
    try:
        store.database.interactBlocking(lambda tx: tx.execute(f"NOTIFY {CHANNEL}"))
    except StoreError:
        pass


class _BadLine(Exception):
    pass


def _text(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _BadLine(f"{name} must be a string")
    return value


def _enabled(value: object, name: str = "enabled") -> bool:
    if value is None or value == "" or value is True:
        return True
    if value is False:
        return False
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("true", "yes", "1", "on", "enabled"):
            return True
        if word in ("false", "no", "0", "off", "disabled"):
            return False
    raise _BadLine(f"{name} must be true or false, not {value!r}")


def _entry(fields: dict[str, Any]) -> tuple[AccountRecord, str]:
    unknown = sorted(set(fields) - set(IMPORT_FIELDS))
    if unknown:
        raise _BadLine(f"unknown field(s): {', '.join(unknown)}")
    required = {}
    for name in ("aor", "jid", "password"):
        value = _text(fields.get(name), name)
        if value is None:
            raise _BadLine(f"no {name}")
        required[name] = value
    mode = _text(fields.get("mode"), "mode")
    if mode is not None and mode not in MODES:
        raise _BadLine(f"invalid mode {mode!r}; expected one of {', '.join(MODES)}")
    server = _text(fields.get("xmpp_server"), "xmpp_server")
    try:
        server = None if server is None else canonicalServer(server)
    except ValueError as e:
        raise _BadLine(f"xmpp_server: {e}") from None
    record = AccountRecord(
        required["aor"], required["jid"], mode=mode,
        statusText=_text(fields.get("status_text"), "status_text"),
        ringingText=_text(fields.get("ringing_text"), "ringing_text"),
        holdText=_text(fields.get("hold_text"), "hold_text"),
        enabled=_enabled(fields.get("enabled")),
        backpublish=_enabled(fields.get("backpublish"), "backpublish"),
        server=server,
    )
    return record, required["password"]


def _detectFormat(path: str, text: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        return "csv"
    if extension in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _csvLines(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            unknown = [name for name in header if name not in IMPORT_FIELDS]
            missing = [name for name in ("aor", "jid", "password") if name not in header]
            if unknown or missing or len(set(header)) != len(header):
                yield reader.line_num, (
                    "the header row must name the columns, among "
                    f"{', '.join(IMPORT_FIELDS)}"
                    + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                )
                return
            continue
        if len(row) != len(header):
            yield reader.line_num, f"{len(row)} fields where the header has {len(header)}"
            continue
        yield reader.line_num, dict(zip(header, row, strict=True))
    if header is None:
        yield 1, "no header row"


def _jsonLines(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            yield number, f"not JSON: {e.msg} (column {e.colno})"  # type: ignore[attr-defined]
            continue
        if not isinstance(value, dict):
            yield number, "not a JSON object"
            continue
        yield number, value


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --- commands ---


class Admin:
    """
    The commands, writing to C{out}; errors raise L{Exit} or store errors.
    """

    def __init__(self, settings: Settings, options: AdminOptions,
                 stdin: TextIO, out: TextIO, err: TextIO) -> None:
        self.settings = settings
        self.options = options
        self.stdin = stdin
        self.out = out
        self.err = err

    def write(self, line: str) -> None:
        self.out.write(line + "\n")

    def open(self) -> Store:
        return openStore(self.settings.store, createSQLite=False)

    def run(self) -> int:
        command = self.options.subCommand
        if command == "init":
            return self.init()
        if command == "state":
            return self.state(self.options.subOptions)
        sub = self.options.subOptions
        handler: Callable[[usage.Options], int] = getattr(
            self, "account_" + sub.subCommand.replace("-", "_")
        )
        return handler(sub.subOptions)

    def init(self) -> int:
        store = initialiseStore(self.settings.store)
        try:
            self.write(f"created key file {self.settings.store.keyFile} (mode 0600)")
            self.write(f"store {store.display} ready (schema version {store.schemaVersion})")
        finally:
            store.close()
        return OK

    def account_add(self, o: usage.Options) -> int:
        record = AccountRecord(
            o["aor"], o["jid"], mode=o["mode"], statusText=o["status-text"],
            ringingText=o["ringing-text"], holdText=o["hold-text"], enabled=not o["disabled"],
            server=o["server"],
        )
        store = self.open()
        try:
            # Refuse bad addresses and existing accounts before prompting.
            aor = normaliseAoR(record.aor)
            parseBareJID(record.jid)
            existing = _now(store.accounts.getAccount(aor).addErrback(_missing))
            if existing is not None:
                raise AccountExists(f"the SIP AoR {aor} is already provisioned")
            password = _readPassword(o, self.stdin)
            added = _now(store.accounts.addAccount(record, password))
            _notifyGateways(store)
        finally:
            store.close()
        state = "enabled" if added.enabled else "disabled"
        self.write(f"added {added.aor} -> {added.jid} ({state})")
        return OK

    def account_list(self, o: usage.Options) -> int:
        store = self.open()
        try:
            records = _now(store.accounts.listAccounts())
        finally:
            store.close()
        if o["json"]:
            self.write(json.dumps([_recordDict(r) for r in records], indent=2))
            return OK
        for r in records:
            state = "enabled" if r.enabled else "disabled"
            self.write("\t".join((r.aor, r.jid, r.mode or "default", state,
                                  r.server or "default")))
        return OK

    def account_show(self, o: usage.Options) -> int:
        store = self.open()
        try:
            r = _now(store.accounts.getAccount(o["aor"]))
        finally:
            store.close()
        if o["json"]:
            self.write(json.dumps(_recordDict(r), indent=2))
            return OK
        for label, value in (
            ("aor", r.aor),
            ("jid", r.jid),
            ("mode", r.mode or f"default ({self.settings.xmpp.mode})"),
            ("status-text", r.statusText or f"default ({self.settings.xmpp.statusText!r})"),
            ("ringing-text", r.ringingText or "default"),
            ("hold-text", r.holdText or "default"),
            ("enabled", "yes" if r.enabled else "no"),
            ("backpublish", "yes" if r.backpublish else "no (opted out)"),
            ("xmpp-server", r.server or f"default ({self.settings.xmpp.server or 'DNS SRV'})"),
            ("password", "set (encrypted at rest)"),
            ("created", _iso(r.createdAt)),
            ("updated", _iso(r.updatedAt)),
        ):
            self.write(f"{label}: {value}")
        return OK

    def account_remove(self, o: usage.Options) -> int:
        store = self.open()
        try:
            record = _now(store.accounts.getAccount(o["aor"]))
            _now(store.accounts.removeAccount(record.aor))
            _notifyGateways(store)
        finally:
            store.close()
        self.write(f"removed {record.aor}")
        return OK

    def _setEnabled(self, o: usage.Options, enabled: bool) -> int:
        store = self.open()
        try:
            record = _now(store.accounts.setEnabled(o["aor"], enabled))
            _notifyGateways(store)
        finally:
            store.close()
        self.write(f"{'enabled' if enabled else 'disabled'} {record.aor}")
        return OK

    def account_enable(self, o: usage.Options) -> int:
        return self._setEnabled(o, True)

    def account_disable(self, o: usage.Options) -> int:
        return self._setEnabled(o, False)

    def account_set_password(self, o: usage.Options) -> int:
        store = self.open()
        try:
            record = _now(store.accounts.getAccount(o["aor"]))
            password = _readPassword(o, self.stdin)
            _now(store.accounts.setPassword(record.aor, password))
            _notifyGateways(store)
        finally:
            store.close()
        self.write(f"password of {record.aor} replaced")
        return OK

    def account_set_backpublish(self, o: usage.Options) -> int:
        store = self.open()
        try:
            record = _now(store.accounts.setBackpublish(o["aor"], o["backpublish"]))
            _notifyGateways(store)
        finally:
            store.close()
        state = "on" if record.backpublish else "off (opted out)"
        self.write(f"back-publishing of {record.aor}: {state}")
        return OK

    def account_set_server(self, o: usage.Options) -> int:
        store = self.open()
        try:
            record = _now(store.accounts.setServer(o["aor"], o["server"]))
            _notifyGateways(store)
        finally:
            store.close()
        server = record.server or f"default ({self.settings.xmpp.server or 'DNS SRV'})"
        self.write(f"XMPP server of {record.aor}: {server}")
        return OK

    def account_check(self, o: usage.Options) -> int:
        store = self.open()
        try:
            account = _now(store.accounts.credentials(o["aor"]))
        finally:
            store.close()
        from sipxmpp.ops.accountcheck import runCheck

        return runCheck(self.settings, account, o["timeout"], o["wait"], self.out, self.err)

    def account_import(self, o: usage.Options) -> int:
        path = o["file"]
        name = "<stdin>" if path == "-" else path
        try:
            if path == "-":
                text = self.stdin.read()
            else:
                with open(path, encoding="utf-8-sig", newline="") as f:
                    mode = os.fstat(f.fileno()).st_mode
                    if mode & (stat.S_IRGRP | stat.S_IROTH):
                        self.err.write(
                            f"{PROGRAM}: warning: {path} holds passwords and other users can "
                            f"read it (mode {stat.S_IMODE(mode):04o}); chmod 600 it, and "
                            "delete it once imported\n"
                        )
                    text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise Exit(ERROR, f"cannot read {name}: {e}") from None
        form = o["format"] or _detectFormat(path, text)
        parsed = _csvLines(text) if form == "csv" else _jsonLines(text)
        problems: list[tuple[int, str]] = []
        entries: list[tuple[AccountRecord, str]] = []
        lines: list[int] = []
        for number, fields in parsed:
            if isinstance(fields, str):
                problems.append((number, fields))
                continue
            try:
                entries.append(_entry(fields))
            except _BadLine as e:
                problems.append((number, str(e)))
                continue
            lines.append(number)
        if not problems and not entries:
            raise Exit(USAGE, f"{name}: no account to import")
        store = self.open()
        try:
            # With bad lines already, the rest is still checked against the
            # store (a dry run), to report every bad line at once.
            dryRun = bool(problems) or o["dry-run"]
            added: list[AccountRecord] = []
            try:
                added = _now(store.accounts.addAccounts(entries, dryRun=dryRun))
            except AccountsRejected as e:
                problems += [(lines[index], reason) for index, reason in e.problems]
            if not dryRun:
                _notifyGateways(store)
        finally:
            store.close()
        if problems:
            for number, reason in sorted(problems):
                self.err.write(f"{name}:{number}: {reason}\n")
            raise Exit(USAGE, f"{len(problems)} bad line(s) in {name}; nothing was imported")
        enabled = sum(1 for r in added if r.enabled)
        if o["dry-run"]:
            self.write(f"{len(added)} account(s) ({enabled} enabled) would be imported "
                       f"from {name} (dry run: nothing was stored)")
            return OK
        self.write(f"imported {len(added)} account(s) ({enabled} enabled) from {name}")
        return OK

    def account_export(self, o: usage.Options) -> int:
        store = self.open()
        try:
            records = _now(store.accounts.listAccounts())
        finally:
            store.close()
        rows = [_recordDict(r) for r in records]
        if o["format"] == "jsonl":
            for row in rows:
                self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
            return OK
        writer = csv.writer(self.out, lineterminator="\n")
        writer.writerow(EXPORT_FIELDS)
        for row in rows:
            writer.writerow([
                ("true" if row[f] else "false") if f in ("enabled", "backpublish")
                else "" if row[f] is None else row[f]
                for f in EXPORT_FIELDS
            ])
        return OK

    def state(self, o: usage.Options) -> int:
        store = self.open()
        try:
            now = time.time()
            reports = _now(store.runtime.report(now))
        finally:
            store.close()
        for line in describeReports(reports, now, asJSON=o["json"]):
            self.write(line)
        return OK


def _fail(stderr: TextIO, status: int, message: str) -> int:
    stderr.write(f"{PROGRAM}: error: {message}\n")
    return status


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{sipxmpp-admin} with C{argv} (default: C{sys.argv[1:]}) and return
    the exit status.
    """
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    options = AdminOptions()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        stderr.write(f"{PROGRAM}: usage error: {e}\n(see '{PROGRAM} --help')\n")
        return USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else OK
    try:
        settings = loadSettings(options["config"])
    except ConfigError as e:
        return _fail(stderr, ERROR, f"configuration error: {e}")
    try:
        return Admin(settings, options, stdin, stdout, stderr).run()
    except Exit as e:
        return _fail(stderr, e.status, e.message)
    except InvalidAddress as e:
        return _fail(stderr, USAGE, str(e))
    except AccountNotFound as e:
        return _fail(stderr, NOT_FOUND, str(e))
    except (AccountExists, KeyFileExists, AlreadyInitialised) as e:
        return _fail(stderr, EXISTS, str(e))
    except StoreError as e:
        return _fail(stderr, ERROR, str(e))
    except KeyboardInterrupt:
        return _fail(stderr, ERROR, "interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
