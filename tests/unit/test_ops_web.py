"""
Tests for L{sipxmpp.ops.web} and L{sipxmpp.ops.metrics}.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.web import makeSite


def get(site: object, path: bytes) -> tuple[int, bytes]:
    request = DummyRequest(path.strip(b"/").split(b"/"))
    resource = site.getResourceFor(request)  # type: ignore[attr-defined]
    body = resource.render(request)
    return request.responseCode or 200, body


class WebTests(SynchronousTestCase):
    def test_health(self) -> None:
        healthy = [True]
        site = makeSite(Metrics(), {"store": lambda: healthy[0]})
        self.assertEqual(get(site, b"/healthz"),
                         (200, b'{"status": "ok", "checks": {"store": true}}\n'))
        healthy[0] = False
        code, body = get(site, b"/healthz")
        self.assertEqual((code, json.loads(body)["status"]), (503, "failing"))

    def test_metrics(self) -> None:
        metrics = Metrics()
        metrics.describe("sipxmpp_x_total", "Things.")
        metrics.increment("sipxmpp_x_total", transport="UDP")
        metrics.increment("sipxmpp_x_total", 2, transport="UDP")
        metrics.increment("sipxmpp_x_total", transport='T"CP')
        metrics.gauge("sipxmpp_g", lambda: 1.5, "A gauge.")
        code, body = get(makeSite(metrics, {}), b"/metrics")
        self.assertEqual(body.decode().splitlines(), [
            "# HELP sipxmpp_x_total Things.",
            "# TYPE sipxmpp_x_total counter",
            'sipxmpp_x_total{transport="T\\"CP"} 1',
            'sipxmpp_x_total{transport="UDP"} 3',
            "# HELP sipxmpp_g A gauge.",
            "# TYPE sipxmpp_g gauge",
            "sipxmpp_g 1.5",
        ])
        self.assertEqual(metrics.value("sipxmpp_x_total", transport="UDP"), 3)

    def test_status(self) -> None:
        site = makeSite(Metrics(), {}, status=lambda: {"users": {"sip:a@b": {"x": 1}}})
        code, body = get(site, b"/status")
        self.assertEqual((code, json.loads(body)), (200, {"users": {"sip:a@b": {"x": 1}}}))
