"""
twistd integration: command-line options and the service composition root.

C{twistd -n sipxmpp --config FILE} reads one configuration file; a few common
keys can be overridden on the command line. This is the only module that
touches the global reactor: everything below it gets the reactor passed in.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from sipxmpp import __version__
from sipxmpp.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, loadSettings
from sipxmpp.ops.logs import makeLogObserver, openLogFile
from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.web import makeSite

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

    def __init__(self, settings: Settings, metrics: Metrics, logfile: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self._logfile = logfile

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
            parent.setComponent(
                ILogObserver, makeLogObserver(self.settings.log, openLogFile(self._logfile))
            )
        super().setServiceParent(parent)

    def startService(self) -> None:
        self.log.info(
            "sipxmpp {version} starting with {path}", version=__version__, path=self.settings.path
        )
        super().startService()


def buildService(settings: Settings, reactor: Any, logfile: str | None = None) -> GatewayService:
    """
    Compose the gateway's services from validated settings.
    """
    metrics = Metrics()
    top = GatewayService(settings, metrics, logfile)
    http = strports.service(
        settings.http.listen,
        makeSite(metrics, checks={"running": lambda: top.running == 1}),
        reactor=reactor,
    )
    http.setName("http")
    http.setServiceParent(top)
    return top


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
    return buildService(settings, reactor, logfile)
