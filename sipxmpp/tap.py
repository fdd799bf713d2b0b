"""
twistd integration: command-line options and the service composition root.

C{twistd -n sipxmpp --config FILE} reads one configuration file; a few common
keys can be overridden on the command line. This is the only module that
touches the global reactor: everything below it gets the reactor passed in.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python import usage
from twisted.python.components import Componentized

from sipxmpp import __version__
from sipxmpp.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    Settings,
    liveSettings,
    loadSettings,
)
from sipxmpp.ops.fdlimit import FDMonitor
from sipxmpp.ops.gcstats import CollectorTimer
from sipxmpp.ops.health import (
    Check,
    CheckResult,
    UpstreamProbe,
    lagCheck,
    storeCheck,
    xmppCheck,
)
from sipxmpp.ops.logs import makeLogObserver, openLogFile, reopenOnSignal
from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.web import makeSite
from sipxmpp.ops.xmppreport import XMPPReport, sessionStateKind
from sipxmpp.processes import worker as workerProcess
from sipxmpp.processes.gctuning import YoungCollector, tuneGarbageCollector
from sipxmpp.processes.supervisor import WorkerSupervisor
from sipxmpp.sip.core.presenceagent import PresenceAgent
from sipxmpp.sip.core.proxy import Proxy
from sipxmpp.sip.shell.overload import OverloadMonitor
from sipxmpp.sip.shell.service import (
    SubscriptionsService,
    UpstreamError,
    backpublishingOf,
    buildSIP,
    compositorOf,
    subscriptionsOf,
    upstreamPeer,
)
from sipxmpp.store.accountwatch import AccountWatcher, PostgreSQLNotifications
from sipxmpp.store.addresses import aorOfURI
from sipxmpp.store.errors import StoreError
from sipxmpp.store.provisioned import ProvisionedAoRs
from sipxmpp.store.service import makeStoreService
from sipxmpp.store.takeover import AoRTakeover
from sipxmpp.telephony.state import TelephonyStateMachine
from sipxmpp.xmpp.callpresence import ShownOnClient, ShownOnOwnResource
from sipxmpp.xmpp.presencesource import XMPPPresenceSource
from sipxmpp.xmpp.publisher import Publisher
from sipxmpp.xmpp.session import SessionFactory, SessionSettings

# Command-line flags that override one configuration key each.
OVERRIDES = {
    "listen": ("sip", "listen"),
    "upstream": ("sip", "upstream"),
    "domain": ("sip", "domain"),
    "http-listen": ("http", "listen"),
    "log-level": ("log", "level"),
    "log-format": ("log", "format"),
}


class Options(usage.Options):
    """
    Options of C{twistd sipxmpp}.
    """

    synopsis = "[--config FILE] [--set SECTION.KEY=VALUE ...]"
    longdesc = (
        "Run the sipxmpp gateway: a SIP edge proxy that publishes call state "
        "as XMPP presence. All settings come from the configuration file; the "
        "options below override single keys."
    )
    optParameters = [
        ["config", "c", DEFAULT_CONFIG_PATH, "Configuration file."],
        ["listen", None, None, "Override [sip] listen."],
        ["upstream", None, None, "Override [sip] upstream."],
        ["domain", None, None, "Override [sip] domain."],
        ["http-listen", None, None, "Override [http] listen."],
        ["log-level", None, None, "Override [log] level."],
        ["log-format", None, None, "Override [log] format."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["set"] = []

    def opt_set(self, assignment: str) -> None:
        """
        Override any key: --set SECTION.KEY=VALUE (repeatable).
        """
        name, sep, value = assignment.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            raise usage.UsageError(f"--set expects SECTION.KEY=VALUE, got {assignment!r}")
        self["set"].append(((section.strip(), key.strip()), value))

    def opt_version(self) -> None:
        """
        Print the sipxmpp version and exit.
        """
        print(f"sipxmpp {__version__}")
        sys.exit(0)

    def overrides(self) -> dict[tuple[str, str], str]:
        """
        Return the command-line overrides as C{(section, key) -> value}.
        """
        result: dict[tuple[str, str], str] = {}
        for flag, target in OVERRIDES.items():
            if self[flag] is not None:
                result[target] = self[flag]
        result.update(self["set"])
        return result


class GatewayService(MultiService):
    """
    The top-level service: named children for each part of the gateway.

    When attached to a twistd application it also registers the log observer
    configured by C{[log]}, which twistd then installs instead of its default.
    """

    log = Logger()

    proxy: Proxy | None = None
    machine: TelephonyStateMachine | None = None
    publisher: Publisher | None = None
    # The SIP worker processes, with [sip] workers above 1 (then no proxy).
    workers: WorkerSupervisor | None = None
    report: XMPPReport | None = None
    # The AoRs the SIP side takes as the gateway's own (PUBLISH, SUBSCRIBE
    # mode, back-publishing), when one of those is on.
    provisioned: ProvisionedAoRs | None = None
    clock: Any = None
    # When the service started (the clock's seconds), for the XMPP check's
    # grace after a start.
    startedAt: float | None = None
    # Where new XMPP sessions get their settings (SIGHUP updates them).
    sessions: SessionFactory | None = None
    # The command-line overrides, applied again when the file is re-read.
    overrides: dict[tuple[str, str], str] = {}
    # Raises the open-file limit before any child starts, then watches it.
    fds: FDMonitor | None = None

    def __init__(self, settings: Settings, metrics: Metrics, logfile: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self._logfile = logfile
        self._logStream: Any = None
        self._restoreSignal: Callable[[], None] | None = None
        self._restoreHangup: Callable[[], None] | None = None
        # [log] level, applied in front of the configured observer so that
        # SIGHUP can change it.
        self._levelFilter = LogLevelFilterPredicate(
            defaultLogLevel=LogLevel.levelWithName(settings.log.level))
        self._collectorTimer = CollectorTimer(metrics)
        self._youngCollector: YoungCollector | None = None

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            self._logStream = openLogFile(self._logfile)
            everything = replace(self.settings.log, level="debug")
            observer = FilteringLogObserver(makeLogObserver(everything, self._logStream),
                                            [self._levelFilter])  # fmt: skip
            parent.setComponent(ILogObserver, observer)
        super().setServiceParent(parent)

    def status(self) -> dict[str, object]:
        """
        What C{/status} shows (as JSON, and as the page for people): each
        known user's telephony state (C{"telephony"}) and XMPP session state
        (C{"xmpp"}), JID, how the call is shown (C{"shown"}: C{"on"} is
        C{"client"} or C{"own-resource"}, with the resource) and last
        events; the totals, and the SIP core's counts (with the provisioned
        AoRs it takes as its own, when it keeps them).
        """
        telephony = self.machine.users() if self.machine is not None else {}
        publishers = self.publisher.users if self.publisher is not None else {}
        users: dict[str, dict[str, object]] = {}
        totals: dict[str, dict[str, int]] = {"telephony": {}, "xmpp": {}, "shown": {}}
        for aor in sorted(set(telephony) | set(publishers)):
            user = publishers.get(aor)
            entry: dict[str, object] = {
                "telephony": telephony[aor].value if aor in telephony else "offline",
                "xmpp": user.session.state if user is not None else "logged out",
                "jid": user.session.jid.userhost() if user is not None else None,
                "mode": user.mode if user is not None else None,
                "phase": user.machine.phase.value if user is not None else None,
                "shown": _shown(user),
                "events": [{"time": e.time, "text": e.text}
                           for e in (self.report.events(aor) if self.report else ())],
            }
            users[aor] = entry
            for group, value in (("telephony", entry["telephony"]),
                                 ("xmpp", sessionStateKind(str(entry["xmpp"]))),
                                 ("shown", _shown(user)["on"])):  # fmt: skip
                if value is not None:
                    totals[group][str(value)] = totals[group].get(str(value), 0) + 1
        sip: dict[str, object] = {}
        if self.proxy is not None:
            sip = {"bindings": len(self.proxy.registrations),
                   "transactions": self.proxy.activeTransactions}
        if self.workers is not None:
            sip = {"bindings": int(self.workers.gauge("sipxmpp_sip_bindings")),
                   "transactions": int(self.workers.gauge("sipxmpp_sip_transactions")),
                   "workers": self.workers.status()}
        if self.provisioned is not None:
            # Loaded a few seconds after an admin change: an operator (or a
            # test) can see when a new account counts on the SIP side.
            sip["provisioned"] = len(self.provisioned)
        now = self.clock.seconds() if self.clock is not None else None
        return {"users": users, "sip": sip, "totals": {"users": len(users), **totals},
                "time": now, "version": f"sipxmpp {__version__}"}

    def startService(self) -> None:
        self.log.info(
            "sipxmpp {version} starting with {path}", version=__version__, path=self.settings.path
        )
        tuneGarbageCollector()
        self._collectorTimer.install()
        if self.clock is not None:
            self._youngCollector = YoungCollector(self.clock)
            self._youngCollector.start()
            self.startedAt = self.clock.seconds()
            if self._logStream is not None and hasattr(self.clock, "callFromThread"):
                # logrotate's postrotate: kill -USR1 (see docs/operations.rst).
                self._restoreSignal = reopenOnSignal(self._logStream, self.clock.callFromThread)
            if hasattr(self.clock, "callFromThread"):
                self._restoreHangup = _onHangup(
                    lambda: self.clock.callFromThread(self.reloadConfig))
        if self.fds is not None:
            self.fds.startService()
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop the children one after the other, in the reverse order of
        starting, each once the one before has finished: the publisher
        finishes what it was doing (a remote-control command in flight
        saves the client's status when it completes) before the store
        writes its last changes and closes. C{MultiService} would stop
        them all at once, and such a status would be lost.
        """
        Service.stopService(self)
        self._collectorTimer.uninstall()
        if self._youngCollector is not None:
            self._youngCollector.stop()
        if self._restoreSignal is not None:
            self._restoreSignal()
            self._restoreSignal = None
        if self._restoreHangup is not None:
            self._restoreHangup()
            self._restoreHangup = None
        if self.fds is not None and self.fds.running:
            self.fds.stopService()

        async def stopAll() -> None:
            for child in reversed(list(self)):
                try:
                    await maybeDeferred(child.stopService)
                except Exception:
                    self.log.failure("stopping {name} failed", name=child.name)

        return Deferred.fromCoroutine(stopAll())


    def reloadConfig(self) -> bool:
        """
        Re-read the configuration file (SIGHUP) and apply the keys that can
        change while running (L{sipxmpp.config.LIVE_KEYS}: the log level,
        the XMPP texts, mode and timeouts); log the changed keys that need a
        restart. A file that does not load is logged as one line and the
        running configuration kept.

        @return: whether the file loaded.
        """
        try:
            new = loadSettings(self.settings.path, self.overrides)
        except ConfigError as e:
            self.log.error("configuration not reloaded, keeping the running one: {e}", e=str(e))
            return False
        merged, live, restart = liveSettings(self.settings, new)
        self.settings = merged
        if ("log", "level") in live:
            self._setLogLevel(merged.log.level)
        if self.publisher is not None and any(s == "xmpp" for s, _ in live):
            self.publisher.updateSettings(merged.xmpp.publisher())
            sessionSettings = merged.xmpp.session(merged.store.instance)
            if self.sessions is not None:
                self.sessions.settings = sessionSettings
            for user in self.publisher.users.values():
                if isinstance(getattr(user.session, "settings", None), SessionSettings):
                    user.session.settings = sessionSettings  # type: ignore[attr-defined]
        names = ", ".join(f"[{s}] {k}" for s, k in live) or "nothing"
        self.log.info("configuration reloaded from {path}: applied {names}",
                      path=self.settings.path, names=names)  # fmt: skip
        if restart:
            self.log.warn("configuration: {names} changed; takes effect after a restart",
                          names=", ".join(f"[{s}] {k}" for s, k in restart))  # fmt: skip
        return True

    def _setLogLevel(self, level: str) -> None:
        self._levelFilter.defaultLogLevel = LogLevel.levelWithName(level)
        self._levelFilter.clearLogLevels()


def _onHangup(handler: Callable[[], object]) -> Callable[[], None]:
    """
    Call C{handler} (safe from a signal handler) on SIGHUP; return a
    function that puts the previous handler back.
    """
    previous = signal.signal(signal.SIGHUP, lambda number, frame: handler())

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


def _reloadSoon(reactor: Any, provisioned: ProvisionedAoRs) -> Callable[[str, object], None]:
    """
    A listener of account changes that reloads C{provisioned} once after a
    batch of changes.
    """
    pending: list[object] = []

    def reload() -> None:
        pending.clear()
        provisioned.reload()

    def changed(aor: str, account: object) -> None:
        if not pending:
            pending.append(reactor.callLater(0, reload))

    return changed


def _shown(user: Any) -> dict[str, str | None]:
    """
    How C{user}'s (a L{UserPublisher} or L{None}) call is shown, for
    C{/status}: C{"on"} and C{"resource"}.
    """
    shown = user.shown if user is not None else None
    if isinstance(shown, ShownOnClient):
        return {"on": "client", "resource": shown.target.resource or shown.target.full()}
    if isinstance(shown, ShownOnOwnResource):
        return {"on": "own-resource", "resource": user.session.jid.resource}
    return {"on": None, "resource": None}


class StartupError(Exception):
    """
    The gateway cannot start as configured; C{str()} is one line.
    """


def buildService(settings: Settings, reactor: Any, logfile: str | None = None,
                 overrides: dict[tuple[str, str], str] | None = None) -> GatewayService:
    """
    Compose the gateway from validated settings: store, XMPP publisher,
    SIP (transports, proxy, observer) and the ops endpoint, around one
    telephony state machine.

    Children start in this order (store first: it restores the state into
    the machine in the next reactor turn, after the publisher is ready) and
    stop in the reverse order.

    With C{[sip] workers} above 1, SIP runs in worker processes that
    the C{sip} child (a L{WorkerSupervisor}) starts with the same file and
    C{overrides}; they have no upstream keepalive of their own yet.

    @raise StartupError: if the store, the CA file or the upstream cannot
        be used.
    """
    metrics = Metrics()
    top = GatewayService(settings, metrics, logfile)
    top.clock = reactor
    top.fds = fds = FDMonitor(reactor)
    machine = TelephonyStateMachine(reactor, dialogWatchdog=settings.sip.dialogWatchdog)
    try:
        store = makeStoreService(settings.store, reactor, machine,
                                 owner=settings.store.instance or None)
    except StoreError as e:
        raise StartupError(f"store {settings.store.url}: {e}") from None
    store.setName("store")
    store.setServiceParent(top)
    if store.store.database.backend.name == "postgresql" and not settings.store.instance:
        # A shared store: instances without names of their own share the
        # XMPP resource, and kick each other's sessions of a user both serve.
        top.log.warn("[store] instance is not set: gateways sharing this PostgreSQL store "
                     "need distinct instance names (their XMPP resources end with them)")
    try:
        sessions = SessionFactory(
            reactor, settings.xmpp.session(settings.store.instance), caFile=settings.xmpp.caFile
        )
    except (OSError, ValueError) as e:
        raise StartupError(f"[xmpp] ca_file {settings.xmpp.caFile!r}: {e}") from None
    report = XMPPReport(
        reactor, metrics, lambda: top.publisher.sessionStates() if top.publisher else {}
    )
    top.report = report
    publisher = Publisher(
        reactor, settings.xmpp.publisher(), store.store.accounts, sessions,
        savedStatuses=store.persister, report=report,
    )
    publisher.setName("xmpp")
    publisher.setServiceParent(top)
    machine.addObserver(publisher)
    top.sessions = sessions
    # Admin changes to accounts reach the publisher within seconds.
    watcher = AccountWatcher(store.store.accounts, reactor)
    watcher.addListener(publisher.accountChanged)
    watcher.setName("accounts")
    watcher.setServiceParent(top)
    backend = store.store.database.backend
    if backend.name == "postgresql" and hasattr(reactor, "callFromThread"):
        listen = PostgreSQLNotifications(backend.connect, watcher, reactor.callFromThread)
        listen.setName("accounts-listen")
        listen.setServiceParent(top)
    # Once the restart state is back, put back what clients were left at;
    # from then on, users whose publications reach us but whose clients'
    # saved statuses another gateway sharing the store wrote are taken over.
    takeover = AoRTakeover(store.store.runtime, publisher, reactor)

    def restored(summary: object) -> None:
        publisher.reconcile()
        machine.addPublicationListener(takeover)

    store.restored.addCallback(restored)
    isProvisioned: Callable[[str], bool] | None = None
    provisioned: ProvisionedAoRs | None = None
    # [backpublish]: the users' XMPP presence, from their sessions, for SIP
    # watchers the users' rosters authorise (serve) or for a presence
    # server (publish).
    presence: XMPPPresenceSource | None = None
    if settings.backpublish.mode != "off":
        presence = XMPPPresenceSource(publisher, store.store.accounts,
                                      settings.backpublish.allowedWatchers)
        # A user's opt-out (sipxmpp-admin account set-backpublish) counts
        # at once.
        watcher.addListener(presence.accountChanged)
    if (settings.ingest.publishers or not settings.sip.upstream or settings.ingest.subscribe
            or presence is not None):
        # PUBLISH is answered on the SIP path: who is provisioned is kept
        # in memory, reloaded from the store; SUBSCRIBE mode subscribes
        # for those AoRs; so does a SUBSCRIBE for a user's presence.
        provisioned = ProvisionedAoRs(store.store.accounts, reactor)
        provisioned.setName("provisioned")
        provisioned.setServiceParent(top)
        top.provisioned = provisioned
        isProvisioned = provisioned.isProvisioned
        # An admin change counts for PUBLISH at once, not at the next reload.
        watcher.addListener(_reloadSoon(reactor, provisioned))
    if settings.sip.workers > 1:
        top.machine = machine
        top.publisher = publisher
        _addWorkers(top, settings, reactor, metrics, machine, store, overrides or {}, {
            "running": lambda: top.running == 1,
            "store": storeCheck(store.store.accounts.lookup),
            "xmpp": xmppCheck(publisher.sessionStates, reactor, lambda: top.startedAt),
            "fds": fds.check,
        })
        return top
    try:
        sip, proxy = buildSIP(
            settings.sip, reactor, metrics, machine, aorOfURI,
            ingest=settings.ingest, isProvisioned=isProvisioned,
            backpublish=settings.backpublish, presence=presence,
            authorise=presence.authorise if presence is not None else None,
        )
    except UpstreamError as e:
        text = str(e)
        raise StartupError(text if text.startswith("[") else f"[sip] upstream: {text}") from None
    sip.setServiceParent(top)
    # The routes to the phones are restored when the store starts, before
    # any SIP is read, and saved as they change.
    store.routes = proxy.routes
    compositor = compositorOf(proxy)
    if compositor is not None:
        store.publications = compositor.restore
    subscriptions = subscriptionsOf(proxy)
    if subscriptions is not None and provisioned is not None:
        provisioned.addListener(subscriptions.aorsChanged)
        subscribing = SubscriptionsService(subscriptions)
        subscribing.setName("subscribe")
        subscribing.setServiceParent(top)
    backpublishing = backpublishingOf(proxy)
    if backpublishing is not None and provisioned is not None and presence is not None:
        # Watchers' JIDs are looked up as accounts are provisioned; a roster
        # change asks the presence agent to authorise its watchers again.
        provisioned.addListener(presence.aorsChanged)
        provisioned.addListener(backpublishing.aorsChanged)
        agent = backpublishing.backpublisher
        if isinstance(agent, PresenceAgent):
            presence.addAuthorisationListener(agent.reauthorise)
        backpublishing.setName("backpublish")
        backpublishing.setServiceParent(top)
    overload = OverloadMonitor(reactor, settings.sip.overloadLag, settings.sip.overloadBacklog,
                               sip.receiveBacklog, metrics)
    overload.setName("overload")
    overload.setServiceParent(top)
    proxy.isOverloaded = overload.isOverloaded
    top.proxy = proxy
    top.machine = machine
    top.publisher = publisher
    checks: dict[str, Check] = {
        "running": lambda: top.running == 1,
        "store": storeCheck(store.store.accounts.lookup),
        "xmpp": xmppCheck(publisher.sessionStates, reactor, lambda: top.startedAt),
        "reactor": lagCheck(lambda: overload.lag),
        "fds": fds.check,
    }
    upstream = proxy.settings.upstream
    if upstream is not None:
        # OPTIONS keepalives to the upstream, sent once SIP listens.
        keepalive = UpstreamProbe(reactor, proxy.sendRequest, upstream,
                                  proxy.settings.local[upstream.transport])
        keepalive.setName("keepalive")
        keepalive.setServiceParent(top)
        checks["upstream"] = keepalive.check
    _addHTTP(top, settings, reactor, metrics, checks)
    return top


def _addHTTP(top: GatewayService, settings: Settings, reactor: Any, metrics: Metrics,
             checks: dict[str, Check]) -> None:
    http = strports.service(
        settings.http.listen,
        makeSite(metrics, checks=checks, status=top.status, clock=reactor),
        reactor=reactor,
    )
    http.setName("http")
    http.setServiceParent(top)


def _addWorkers(top: GatewayService, settings: Settings, reactor: Any, metrics: Metrics,
                machine: TelephonyStateMachine, store: Any,
                overrides: dict[tuple[str, str], str], checks: dict[str, Check]) -> None:
    """
    SIP in C{[sip] workers} processes, supervised by the C{sip} child, and
    the HTTP endpoint, whose checks include that they all run.
    """
    try:
        upstreamPeer(settings.sip.upstream)
    except UpstreamError as e:
        raise StartupError(f"[sip] upstream: {e}") from None
    workers = WorkerSupervisor(
        reactor, settings.sip.workers,
        lambda index, path: workerProcess.command(settings.path, index, path, overrides),
        machine, metrics,
    )
    workers.setName("sip")
    workers.setServiceParent(top)
    top.workers = workers
    # All workers' routes to the phones, saved and restored as with one
    # process, and given to each worker as it connects.
    store.routes = workers.routes

    def check() -> CheckResult:
        up = sum(w.connected for w in workers.workers)
        return CheckResult(up == len(workers.workers),
                           f"{up} of {len(workers.workers)} SIP workers connected")

    def upstream() -> CheckResult:
        return CheckResult(*workers.check("upstream"))

    _addHTTP(top, settings, reactor, metrics,
             {**checks, "workers": check, "upstream": upstream})


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build the service for twistd from parsed L{Options}.

    A configuration error is printed as one line on stderr and ends the
    process with status 1, without a traceback.
    """
    try:
        settings = loadSettings(options["config"], options.overrides())
    except ConfigError as e:
        sys.stderr.write(f"sipxmpp: configuration error: {e}\n")
        raise SystemExit(1) from None
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    parent = getattr(options, "parent", None)
    logfile = parent.get("logfile") if parent is not None else None
    try:
        service = buildService(settings, reactor, logfile, options.overrides())
        service.overrides = options.overrides()
        return service
    except StartupError as e:
        sys.stderr.write(f"sipxmpp: cannot start: {e}\n")
        raise SystemExit(1) from None
