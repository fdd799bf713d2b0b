"""
The status page for people: C{/status} as HTML, rendered on the server.

One table row per user (AoR, JID, telephony state, XMPP session state, how
the call is shown and on which resource, the last events with their times),
the totals above, and a filter box. No build step and no external file: the
page refreshes itself every L{REFRESH_SECONDS} seconds (C{<meta
http-equiv="refresh">}, which keeps the C{?q=} filter); a few lines of
inline script filter the rows as one types. Every text from outside (AoRs,
JIDs, status texts, session failures) goes through L{html.escape}.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

#: Seconds between two reloads of the page.
REFRESH_SECONDS = 5

_STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.5em; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
.totals span { display: inline-block; margin-right: 1.5em; }
.state-ringing, .state-on-the-phone, .state-on-hold { font-weight: bold; color: #a40; }
.xmpp-failed, .xmpp-reconnecting { color: #b00; }
ul.events { margin: 0; padding-left: 1em; font-size: 0.85em; }
"""

# Filters the rows as one types: hides those whose text does not contain
# the box's value. The server filters too (?q=), for the refresh.
_SCRIPT = """
(function () {
  var box = document.getElementById("filter");
  function apply() {
    var q = box.value.toLowerCase();
    var rows = document.querySelectorAll("tbody tr.user");
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var match = rows[i].textContent.toLowerCase().indexOf(q) !== -1;
      rows[i].hidden = !match;
      if (match) { shown++; }
    }
    document.getElementById("shown").textContent = String(shown);
  }
  box.addEventListener("input", apply);
  apply();
  document.body.setAttribute("data-filter-ready", "yes");
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _time(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return ""
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _kind(state: str) -> str:
    return state.split(":", 1)[0].strip().replace(" ", "-") or "unknown"


def matches(aor: str, user: Mapping[str, Any], query: str) -> bool:
    """
    Does the filter C{query} (case-insensitive, a substring) match the
    user's AoR, JID, states, resource or events?
    """
    if not query:
        return True
    shown = user.get("shown") or {}
    values = [aor, user.get("jid"), user.get("telephony"), user.get("xmpp"), shown.get("on"),
              shown.get("resource"), *(ev.get("text") for ev in user.get("events", []))]
    return query.lower() in " ".join(str(v) for v in values).lower()


def renderPage(status: Mapping[str, Any], query: str = "") -> bytes:
    """
    Render C{status} (what C{/status} answers as JSON) as the HTML page,
    with the rows C{query} matches.
    """
    users: Mapping[str, Mapping[str, Any]] = status.get("users", {})
    totals: Mapping[str, Any] = status.get("totals", {})
    rows = []
    for aor, user in sorted(users.items()):
        if not matches(aor, user, query):
            continue
        shown = user.get("shown") or {}
        how = {"client": "on the user's client", "own-resource": "on the gateway's resource"}
        on = shown.get("on")
        showing = _e(how.get(str(on), "not shown")) if on else "&mdash;"
        resource = _e(shown.get("resource") or "")
        events = "".join(
            f'<li><time>{_e(_time(ev.get("time")))}</time> {_e(ev.get("text", ""))}</li>'
            for ev in reversed(user.get("events", []))
        )
        telephony = str(user.get("telephony", ""))
        xmpp = str(user.get("xmpp", ""))
        rows.append(
            f'<tr class="user" data-aor="{_e(aor)}">'
            f'<td class="aor">{_e(aor)}</td>'
            f'<td class="jid">{_e(user.get("jid") or "")}</td>'
            f'<td class="telephony state-{_e(_kind(telephony))}">{_e(telephony)}</td>'
            f'<td class="xmpp xmpp-{_e(_kind(xmpp))}">{_e(xmpp)}</td>'
            f'<td class="shown">{showing}</td>'
            f'<td class="resource">{resource}</td>'
            f'<td><ul class="events">{events}</ul></td>'
            "</tr>"
        )
    summary = [f'<span>users: <b id="total-users">{_e(totals.get("users", len(users)))}</b></span>',
               f'<span>shown: <b id="shown">{len(rows)}</b></span>']
    for group in ("telephony", "xmpp", "shown"):
        counts = totals.get(group, {})
        for name, count in sorted(counts.items()):
            summary.append(f'<span>{_e(group)} {_e(name)}: '
                           f'<b data-total="{_e(group)}:{_e(name)}">{_e(count)}</b></span>')
    sip = status.get("sip", {})
    for name, value in sorted(sip.items()):
        summary.append(f'<span>SIP {_e(name)}: <b data-total="sip:{_e(name)}">{_e(value)}</b>'
                       "</span>")
    empty = "" if rows else '<tr><td colspan="7" id="no-users">no users</td></tr>'
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sipxmpp status</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>sipxmpp status</h1>
<p class="meta">{_e(status.get("version", ""))} &middot; at
<time id="generated">{_e(_time(status.get("time")))}</time> UTC &middot;
refreshes every {REFRESH_SECONDS} s &middot; <a href="?format=json">JSON</a></p>
<p class="totals">{"".join(summary)}</p>
<form method="get" action="">
<label for="filter">Filter</label>
<input id="filter" name="q" type="search" value="{_e(query)}" placeholder="AoR, JID, state">
</form>
<table id="users">
<thead><tr><th>AoR</th><th>JID</th><th>Telephony</th><th>XMPP session</th>
<th>Call shown</th><th>Resource</th><th>Last events (UTC)</th></tr></thead>
<tbody>
{"".join(rows)}{empty}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    return page.encode("utf-8")
