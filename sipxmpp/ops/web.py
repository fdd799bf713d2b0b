"""
The operations HTTP surface: C{/healthz} (with C{/healthz/live} and
C{/healthz/ready}), C{/metrics} and C{/status}.

Served on loopback by default (C{[http] listen}); it exposes no secrets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from sipxmpp.ops.health import CHECK_TIMEOUT, Check, CheckResult
from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.statuspage import renderPage


def _json(request: Request, body: object) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8") + b"\n"


def _outcome(value: object) -> CheckResult:
    if isinstance(value, CheckResult):
        return value
    if isinstance(value, Failure):
        return CheckResult(False, f"check failed: {value.getErrorMessage()}")
    return CheckResult(bool(value))


class ReadyResource(Resource):
    """
    C{/healthz/ready} (and C{/healthz}): 200 with C{{"status": "ok"}} while
    every check passes, 503 with C{"status": "failing"} and the failing
    checks otherwise. C{"checks"} maps each check to whether it passed,
    C{"details"} to its line for operators, C{"failing"} lists those that
    did not. A check that does not answer within C{timeout} seconds fails.
    """

    isLeaf = True

    def __init__(self, checks: Mapping[str, Check], clock: IReactorTime | None = None,
                 timeout: float = CHECK_TIMEOUT) -> None:  # fmt: skip
        super().__init__()
        self._checks = checks
        self._clock = clock
        self._timeout = timeout

    def render_GET(self, request: Request) -> bytes | int:
        names = sorted(self._checks)
        pending: list[Deferred[Any]] = []
        for name in names:
            d: Deferred[Any] = maybeDeferred(self._checks[name])
            if self._clock is not None and not d.called:
                d.addTimeout(self._timeout, self._clock,
                             onTimeoutCancel=lambda result, timeout: CheckResult(
                                 False, f"no answer within {timeout:g} s"))  # fmt: skip
            pending.append(d)
        done = DeferredList(pending, consumeErrors=True)
        now: list[list[tuple[bool, Any]]] = []
        done.addCallback(now.append)
        if now:
            return self._answer(request, names, now[0])
        finished = [False]
        request.notifyFinish().addErrback(lambda _: finished.__setitem__(0, True))

        def write(_: object) -> None:
            if not finished[0]:
                request.write(self._answer(request, names, now[0]))
                request.finish()

        done.addCallback(write)
        return NOT_DONE_YET

    def _answer(self, request: Request, names: list[str],
                results: list[tuple[bool, Any]]) -> bytes:  # fmt: skip
        outcomes = {name: _outcome(value) for name, (_, value) in zip(names, results, strict=True)}
        healthy = all(o.ok for o in outcomes.values())
        request.setResponseCode(200 if healthy else 503)
        return _json(request, {
            "status": "ok" if healthy else "failing",
            "checks": {name: o.ok for name, o in outcomes.items()},
            "details": {name: o.detail for name, o in outcomes.items()},
            "failing": [name for name, o in outcomes.items() if not o.ok],
        })


class LiveResource(Resource):
    """
    C{/healthz/live}: 200 while the process runs and its reactor turns
    (this answer comes from the reactor); for a restart policy, so it
    checks nothing outside the process.
    """

    isLeaf = True

    def __init__(self, started: float) -> None:
        super().__init__()
        self._started = started

    def render_GET(self, request: Request) -> bytes:
        return _json(request, {"status": "ok", "uptime": round(time.monotonic() - self._started, 1)})


class HealthResource(Resource):
    """
    C{/healthz}: readiness (L{ReadyResource}), with the children C{live}
    and C{ready}.
    """

    def __init__(self, checks: Mapping[str, Check], clock: IReactorTime | None = None) -> None:
        super().__init__()
        self.ready = ReadyResource(checks, clock)
        self.live = LiveResource(time.monotonic())
        self.putChild(b"ready", self.ready)
        self.putChild(b"live", self.live)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self.ready
        child: Resource = super().getChild(path, request)
        return child

    def render_GET(self, request: Request) -> bytes | int:
        return self.ready.render_GET(request)


class MetricsResource(Resource):
    """
    C{/metrics}: the Prometheus text exposition of a L{Metrics} registry.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return self._metrics.render().encode("utf-8")


def wantsHTML(request: Request) -> bool:
    """
    Does the client ask for the page rather than JSON? Yes for a browser
    (C{Accept} names C{text/html} and not C{application/json} first) unless
    C{?format=json}; no for C{?format=json}, C{Accept: application/json},
    and clients that send no C{Accept} or C{*/*} (scripts, monitoring).
    """
    args = request.args or {}
    form = (args.get(b"format") or [b""])[0]
    if form in (b"json", b"html"):
        return bool(form == b"html")
    accept = (request.getHeader(b"accept") or b"").lower()
    html = accept.find(b"text/html")
    if html < 0:
        return False
    jsonAt = accept.find(b"application/json")
    return jsonAt < 0 or html < jsonAt


class StatusResource(Resource):
    """
    C{/status}: each user's telephony and XMPP state, as the HTML page
    (L{sipxmpp.ops.statuspage}) for a browser and as JSON otherwise
    (L{wantsHTML}).
    """

    isLeaf = True

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__()
        self._status = status

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"vary", b"Accept")
        request.setHeader(b"cache-control", b"no-store")
        if not wantsHTML(request):
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(self._status(), indent=1, sort_keys=True).encode("utf-8") + b"\n"
        query = ((request.args or {}).get(b"q") or [b""])[0].decode("utf-8", "replace")
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; style-src 'unsafe-inline'; "
                          b"script-src 'unsafe-inline'; form-action 'self'")
        return renderPage(self._status(), query)


class QuietSite(Site):
    """
    A site without an access log: monitoring polls it every few seconds.
    """

    def log(self, request: object) -> None:
        pass


def makeSite(
    metrics: Metrics,
    checks: Mapping[str, Check],
    status: Callable[[], Mapping[str, Any]] = dict,
    clock: IReactorTime | None = None,
) -> Site:
    """
    Build the ops site: C{/healthz} (C{/healthz/live}, C{/healthz/ready}),
    C{/metrics} and C{/status}. C{clock} bounds slow checks.
    """
    root = Resource()
    root.putChild(b"healthz", HealthResource(checks, clock))
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"status", StatusResource(status))
    site = QuietSite(root)
    site.noisy = False
    return site
