"""
The operations HTTP surface: C{/healthz}, C{/metrics} and C{/status}.

Served on loopback by default (C{[http] listen}); it exposes no secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from sipxmpp.ops.metrics import Metrics


class HealthResource(Resource):
    """
    C{/healthz}: 200 with C{{"status": "ok"}} while every check passes,
    503 with the failing checks otherwise.
    """

    isLeaf = True

    def __init__(self, checks: dict[str, Callable[[], bool]]) -> None:
        super().__init__()
        self._checks = checks

    def render_GET(self, request: Request) -> bytes:
        results = {name: bool(check()) for name, check in sorted(self._checks.items())}
        healthy = all(results.values())
        request.setResponseCode(200 if healthy else 503)
        request.setHeader(b"content-type", b"application/json")
        body = {"status": "ok" if healthy else "failing", "checks": results}
        return json.dumps(body).encode("utf-8") + b"\n"


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


class StatusResource(Resource):
    """
    C{/status}: each user's telephony and XMPP session state, as JSON.
    """

    isLeaf = True

    def __init__(self, status: Callable[[], dict[str, object]]) -> None:
        super().__init__()
        self._status = status

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self._status(), indent=1, sort_keys=True).encode("utf-8") + b"\n"


class QuietSite(Site):
    """
    A site without an access log: monitoring polls it every few seconds.
    """

    def log(self, request: object) -> None:
        pass


def makeSite(
    metrics: Metrics,
    checks: dict[str, Callable[[], bool]],
    status: Callable[[], dict[str, object]] = dict,
) -> Site:
    """
    Build the ops site: C{/healthz}, C{/metrics} and C{/status}.
    """
    root = Resource()
    root.putChild(b"healthz", HealthResource(checks))
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"status", StatusResource(status))
    site = QuietSite(root)
    site.noisy = False
    return site
