"""
The status page in a real browser: a gateway (twistd, as a pure publisher)
learns three users' calls from PUBLISH requests sent by hand, and Debian's
headless Chromium loads C{/status} from it and reads what it shows: the
rows and their states, the totals, the filter box (typed into), the page
refreshing itself with a new state, and an AoR with C{'} and C{&} shown as
text. The same URL still answers JSON to scripts.
"""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from html import escape
from typing import Any

from twisted.trial.unittest import TestCase

from sipxmpp.ops.statuspage import REFRESH_SECONDS
from sipxmpp.testing.chromium import Browser, dumpDOM, requireChromium
from sipxmpp.testing.gateway import GatewayServer, waitFor
from sipxmpp.testing.ports import LOOPBACK
from sipxmpp.testing.process import startForTest

DOMAIN = "example.test"
ALICE = f"sip:alice@{DOMAIN}"
BOB = f"sip:bob@{DOMAIN}"
ODD = f"sip:o'hara&co@{DOMAIN}"

DIALOG = """<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full"
             entity="{aor}">
  <dialog id="d-{tag}" call-id="c-{tag}" direction="recipient">
    <state>{state}</state>
  </dialog>
</dialog-info>
"""

# The rows as the browser shows them: the text of each cell.
ROWS = """
Array.from(document.querySelectorAll("tbody tr.user")).map(function (row) {
  return {
    aor: row.querySelector(".aor").textContent,
    dataAor: row.dataset.aor,
    jid: row.querySelector(".jid").textContent,
    telephony: row.querySelector(".telephony").textContent,
    xmpp: row.querySelector(".xmpp").textContent,
    shown: row.querySelector(".shown").textContent,
    events: Array.from(row.querySelectorAll(".events li")).map(function (li) {
      return li.textContent;
    }),
    visible: !row.hidden && row.offsetParent !== null
  };
})
"""


def publish(port: int, aor: str, state: str, tag: str, version: int) -> int:
    """
    PUBLISH C{aor}'s dialog C{tag} in C{state} (Event: dialog) over UDP;
    return the final response's code.
    """
    body = DIALOG.format(aor=escape(aor, quote=True), tag=escape(tag, quote=True), state=state,
                         version=version).encode("utf-8")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        branch = uuid.uuid4().hex[:12]
        head = "\r\n".join([
            f"PUBLISH {aor} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOOPBACK}:{sock.getsockname()[1]};branch=z9hG4bK{branch};rport",
            "Max-Forwards: 70",
            f"From: <{aor}>;tag={branch}",
            f"To: <{aor}>",
            f"Call-ID: {branch}@{LOOPBACK}",
            "CSeq: 1 PUBLISH",
            "Event: dialog",
            "Expires: 600",
            "Content-Type: application/dialog-info+xml",
            f"Content-Length: {len(body)}",
        ])
        sock.settimeout(5)
        sock.sendto(head.encode("utf-8") + b"\r\n\r\n" + body, (LOOPBACK, port))
        while True:
            code = int(sock.recv(65536).split(b" ", 2)[1])
            if code >= 200:
                return code


class StatusPageTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        requireChromium()
        gateway = GatewayServer(upstreamPort=0, domain=DOMAIN, settings={
            ("sip", "upstream"): "",
            ("ingest", "publishers"): f"{LOOPBACK}/32",
        })
        # Provisioned before the start: the gateway loads who is
        # provisioned at start.
        gateway.prepare()
        gateway.addAccount(ALICE, f"alice@{DOMAIN}", "pw-alice")
        gateway.addAccount(BOB, f"bob@{DOMAIN}", "pw-bob")
        gateway.addAccount(ODD, f"ohara@{DOMAIN}", "pw-ohara")
        self.gateway = startForTest(self, gateway)
        self.url = f"http://{LOOPBACK}:{gateway.httpPort}/status"
        for aor, state in ((ALICE, "confirmed"), (BOB, "early"), (ODD, "confirmed")):
            self.assertEqual(publish(gateway.sipPort, aor, state, aor[4:9], 0), 200)
        self.waitForStates({ALICE: "on-the-phone", BOB: "ringing", ODD: "on-the-phone"})

    def statusJSON(self, accept: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url)
        if accept is not None:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=5) as response:
            self.assertEqual(response.headers["Content-Type"], "application/json")
            result: dict[str, Any] = json.load(response)
            return result

    def waitForStates(self, states: dict[str, str]) -> None:
        def probe() -> bool:
            users = self.statusJSON()["users"]
            return all(users.get(aor, {}).get("telephony") == s for aor, s in states.items())

        waitFor(f"/status showing {states}", probe, timeout=20)

    def test_page(self) -> None:
        """
        Chromium shows one row per user with its states and events, the
        totals, and an AoR with C{'} and C{&} as plain text; typing in the
        filter box hides the other rows.
        """
        with Browser() as browser:
            browser.open(self.url)
            self.assertEqual(browser.evaluate("document.title"), "sipxmpp status")
            rows = {row["aor"]: row for row in browser.evaluate(ROWS)}
            self.assertEqual(sorted(rows), sorted([ALICE, BOB, ODD]))
            self.assertEqual(rows[ALICE]["telephony"], "on-the-phone")
            self.assertEqual(rows[BOB]["telephony"], "ringing")
            self.assertEqual(rows[ALICE]["jid"], f"alice@{DOMAIN}")
            # No XMPP server: the session is not up, nothing is shown.
            self.assertNotEqual(rows[ALICE]["xmpp"], "connected")
            self.assertEqual(rows[ALICE]["shown"], "\u2014")
            self.assertTrue(any("telephony on-the-phone" in e for e in rows[ALICE]["events"]),
                            rows[ALICE])
            self.assertEqual((rows[ODD]["aor"], rows[ODD]["dataAor"]), (ODD, ODD))
            self.assertEqual(browser.evaluate("document.querySelectorAll('tbody img').length"), 0)
            totals = browser.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('[data-total]'))"
                ".map(function (e) { return [e.dataset.total, e.textContent]; }))")
            self.assertEqual(totals["telephony:on-the-phone"], "2")
            self.assertEqual(totals["telephony:ringing"], "1")
            self.assertEqual(browser.evaluate("document.getElementById('total-users')"
                                              ".textContent"), "3")

            # Typing in the filter box.
            browser.evaluate("var box = document.getElementById('filter'); box.value = 'BOB';"
                             "box.dispatchEvent(new Event('input')); true")
            visible = [row["aor"] for row in browser.evaluate(ROWS) if row["visible"]]
            self.assertEqual(visible, [BOB])
            self.assertEqual(browser.evaluate("document.getElementById('shown').textContent"),
                             "1")

    def test_refreshes(self) -> None:
        """
        The page reloads itself and then shows the new state.
        """
        with Browser() as browser:
            browser.open(self.url)
            self.assertEqual(
                browser.evaluate("document.querySelector('meta[http-equiv=refresh]').content"),
                str(REFRESH_SECONDS))
            browser.evaluate("window.loadedBefore = true")
            # Bob answers another call (a publication of its own).
            self.assertEqual(publish(self.gateway.sipPort, BOB, "confirmed", "bob-2", 0), 200)
            self.waitForStates({BOB: "on-the-phone"})
            browser.waitFor("window.loadedBefore === undefined && "
                            "document.readyState === 'complete' && "
                            "Array.from(document.querySelectorAll('tbody tr.user')).some("
                            "function (r) { return r.dataset.aor === " + json.dumps(BOB)
                            + " && r.querySelector('.telephony').textContent === 'on-the-phone'; })",
                            timeout=REFRESH_SECONDS * 3)

    def test_filteredByURL(self) -> None:
        """
        C{?q=} (what the filter box submits, and what the refresh keeps)
        filters on the server: the dumped DOM has only that row, the box
        holds the query, and the inline script ran.
        """
        dom = dumpDOM(self.url + "?q=alice")
        self.assertIn('data-filter-ready="yes"', dom)
        self.assertIn(f'data-aor="{ALICE}"', dom)
        self.assertNotIn(f'data-aor="{BOB}"', dom)
        self.assertIn('value="alice"', dom)

    def test_jsonForScripts(self) -> None:
        """
        The same URL answers the JSON scripts always got: without Accept,
        and with C{Accept: application/json}.
        """
        plain, asked = self.statusJSON(), self.statusJSON("application/json")
        self.assertEqual(plain["users"][ALICE]["telephony"], "on-the-phone")
        self.assertEqual(asked["users"].keys(), plain["users"].keys())
        self.assertEqual(plain["totals"]["users"], 3)
