"""
Tests for L{sipxmpp.ops.web} and L{sipxmpp.ops.metrics}.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from sipxmpp.ops.health import CheckResult
from sipxmpp.ops.metrics import Metrics
from sipxmpp.ops.statuspage import REFRESH_SECONDS, renderPage
from sipxmpp.ops.web import makeSite


def request(site: object, path: bytes, accept: bytes | None = None,
            args: dict[bytes, list[bytes]] | None = None) -> DummyRequest:  # fmt: skip
    """
    Render C{path} of C{site}; return the request (finished or not).
    """
    req = DummyRequest(path.strip(b"/").split(b"/"))
    if accept is not None:
        req.requestHeaders.setRawHeaders(b"accept", [accept])
    req.args = args or {}
    resource = site.getResourceFor(req)  # type: ignore[attr-defined]
    body = resource.render(req)
    if isinstance(body, bytes):
        req.write(body)
        req.finish()
    return req


def get(site: object, path: bytes, accept: bytes | None = None,
        args: dict[bytes, list[bytes]] | None = None) -> tuple[int, bytes]:  # fmt: skip
    req = request(site, path, accept, args)
    assert req.finished, "not answered synchronously"
    return req.responseCode or 200, b"".join(req.written)


class HealthTests(SynchronousTestCase):
    def test_health(self) -> None:
        healthy = [True]
        site = makeSite(Metrics(), {"store": lambda: healthy[0]})
        self.assertEqual(json.loads(get(site, b"/healthz")[1]), {
            "status": "ok", "checks": {"store": True}, "details": {"store": ""}, "failing": [],
        })
        healthy[0] = False
        code, body = get(site, b"/healthz")
        self.assertEqual((code, json.loads(body)["status"]), (503, "failing"))

    def test_readyIsHealthz(self) -> None:
        """
        C{/healthz/ready} and C{/healthz} run the same checks; named results
        with their details, and the failing ones listed.
        """
        site = makeSite(Metrics(), {
            "store": lambda: CheckResult(True, "a query answered"),
            "upstream": lambda: CheckResult(False, "3 keepalives unanswered"),
        })
        for path in (b"/healthz", b"/healthz/ready", b"/healthz/"):
            code, body = get(site, path)
            result = json.loads(body)
            self.assertEqual(code, 503, path)
            self.assertEqual(result["checks"], {"store": True, "upstream": False})
            self.assertEqual(result["failing"], ["upstream"])
            self.assertEqual(result["details"]["upstream"], "3 keepalives unanswered")

    def test_live(self) -> None:
        """
        Liveness runs no check: a failing dependency does not restart the
        process.
        """
        site = makeSite(Metrics(), {"store": lambda: False})
        code, body = get(site, b"/healthz/live")
        self.assertEqual((code, json.loads(body)["status"]), (200, "ok"))

    def test_asyncCheck(self) -> None:
        """
        A check answering later (the store's query in its thread) holds the
        answer until it comes.
        """
        answer: Deferred[CheckResult] = Deferred()
        site = makeSite(Metrics(), {"store": lambda: answer, "other": lambda: True},
                        clock=Clock())
        req = request(site, b"/healthz/ready")
        self.assertFalse(req.finished)
        answer.callback(CheckResult(True, "fine"))
        self.assertTrue(req.finished)
        self.assertEqual(json.loads(b"".join(req.written))["details"]["store"], "fine")

    def test_slowCheckFails(self) -> None:
        clock = Clock()
        site = makeSite(Metrics(), {"store": lambda: Deferred()}, clock=clock)
        req = request(site, b"/healthz")
        clock.advance(3)
        self.assertTrue(req.finished)
        result = json.loads(b"".join(req.written))
        self.assertEqual((req.responseCode, result["failing"]), (503, ["store"]))
        self.assertIn("no answer within 3 s", result["details"]["store"])

    def test_checkRaises(self) -> None:
        def broken() -> bool:
            raise RuntimeError("oops")

        code, body = get(makeSite(Metrics(), {"x": broken}), b"/healthz")
        self.assertEqual((code, json.loads(body)["details"]["x"]), (503, "check failed: oops"))


class MetricsTests(SynchronousTestCase):
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

    def test_histogramAndLabeledGauge(self) -> None:
        metrics = Metrics()
        metrics.histogram("sipxmpp_h_seconds", (0.1, 1), "Times.")
        metrics.observe("sipxmpp_h_seconds", 0.05, via="a")
        metrics.observe("sipxmpp_h_seconds", 0.1, via="a")
        metrics.observe("sipxmpp_h_seconds", 3, via="a")
        metrics.observe("sipxmpp_undeclared", 3)
        metrics.labeledGauge("sipxmpp_s", "state", lambda: {"up": 2, "down": 0}, "By state.")
        self.assertEqual(metrics.render().splitlines(), [
            "# HELP sipxmpp_s By state.",
            "# TYPE sipxmpp_s gauge",
            'sipxmpp_s{state="down"} 0',
            'sipxmpp_s{state="up"} 2',
            "# HELP sipxmpp_h_seconds Times.",
            "# TYPE sipxmpp_h_seconds histogram",
            'sipxmpp_h_seconds_bucket{via="a",le="0.1"} 2',
            'sipxmpp_h_seconds_bucket{via="a",le="1"} 2',
            'sipxmpp_h_seconds_bucket{via="a",le="+Inf"} 3',
            'sipxmpp_h_seconds_sum{via="a"} 3.15',
            'sipxmpp_h_seconds_count{via="a"} 3',
        ])
        self.assertEqual(metrics.histogramCount("sipxmpp_h_seconds", via="a"), 3)


EVIL = '<img src=x onerror="alert(1)">&"\''

STATUS: dict[str, Any] = {
    "users": {
        "sip:alice@example.test": {
            "telephony": "on-the-phone", "xmpp": "connected", "jid": "alice@example.test",
            "shown": {"on": "client", "resource": "psi"},
            "events": [{"time": 3600.0, "text": "telephony on-the-phone"}],
        },
        f"sip:{EVIL}@example.test": {
            "telephony": "online", "xmpp": f"failed: login refused: {EVIL}", "jid": None,
            "shown": {"on": None, "resource": None},
            "events": [{"time": 7200.0, "text": f"XMPP session failed: {EVIL}"}],
        },
    },
    "sip": {"bindings": 2, "transactions": 0},
    "totals": {"users": 2, "telephony": {"on-the-phone": 1, "online": 1},
               "xmpp": {"connected": 1, "failed": 1}, "shown": {"client": 1}},
    "time": 0.0,
    "version": "sipxmpp test",
}


class _Cells(HTMLParser):
    """
    The elements and the text of each table cell of a page.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class StatusTests(SynchronousTestCase):
    def test_jsonByDefault(self) -> None:
        """
        Scripts (no Accept, C{*/*}, C{application/json}, C{?format=json})
        get the JSON they always got.
        """
        site = makeSite(Metrics(), {}, status=lambda: {"users": {"sip:a@b": {"x": 1}}})
        for accept, args in ((None, None), (b"*/*", None), (b"application/json", None),
                             (b"text/html", {b"format": [b"json"]}),
                             (b"application/json, text/html;q=0.5", None)):
            req = request(site, b"/status", accept, args)
            self.assertEqual(json.loads(b"".join(req.written)), {"users": {"sip:a@b": {"x": 1}}},
                             accept)
            self.assertEqual(req.responseHeaders.getRawHeaders(b"content-type"),
                             [b"application/json"])

    def test_htmlForBrowsers(self) -> None:
        site = makeSite(Metrics(), {}, status=lambda: STATUS)
        accept = b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        req = request(site, b"/status", accept)
        self.assertEqual(req.responseHeaders.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        page = b"".join(req.written).decode()
        self.assertIn(f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">', page)
        self.assertIn('<input id="filter" name="q"', page)
        self.assertIn("sip:alice@example.test", page)

    def test_escaped(self) -> None:
        """
        AoRs, states and events are text, never markup.
        """
        page = renderPage(STATUS).decode()
        parser = _Cells()
        parser.feed(page)
        self.assertNotIn("img", parser.tags)
        self.assertNotIn("onerror", [name for name, _ in parser.attributes])
        self.assertIn(f"sip:{EVIL}@example.test", parser.text)
        self.assertIn(f"failed: login refused: {EVIL}", parser.text)
        self.assertIn(f" XMPP session failed: {EVIL}", parser.text)
        # Inside the attribute data-aor, quotes cannot end it either.
        self.assertIn(("data-aor", f"sip:{EVIL}@example.test"), parser.attributes)

    def test_rowsAndTotals(self) -> None:
        parser = _Cells()
        parser.feed(renderPage(STATUS).decode())
        for text in ("on-the-phone", "alice@example.test", "on the user's client", "psi",
                     "01:00:00", "users: ", "transactions"):
            self.assertTrue(any(text in t for t in parser.text), text)

    def test_filter(self) -> None:
        page = renderPage(STATUS, query="ALICE").decode()
        self.assertIn("sip:alice@example.test", page)
        self.assertNotIn("onerror", page.replace("&quot;", ""))
        self.assertNotIn("example.test\" ", page)
        self.assertIn('value="ALICE"', page)
        empty = renderPage(STATUS, query="nobody").decode()
        self.assertIn('id="no-users"', empty)
        self.assertIn('value="&lt;b&gt;"', renderPage(STATUS, query="<b>").decode())
