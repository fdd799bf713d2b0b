"""
The saved runtime state, described for operators (C{sipxmpp-admin state}).

Each user's telephony state is computed by the state machine itself: the
saved bindings and dialogs are restored into a throw-away
L{TelephonyStateMachine} whose clock reads the current time, so the
command aggregates exactly like the gateway does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.task import Clock

from sipxmpp.store.records import UserReport
from sipxmpp.store.statekeys import encodeKey
from sipxmpp.telephony.events import TelephonyState
from sipxmpp.telephony.state import TelephonyStateMachine


def telephonyState(report: UserReport, now: float) -> TelephonyState:
    """
    Return the state the saved bindings and dialogs add up to at C{now}.
    """
    clock = Clock()
    clock.advance(now)
    forever = float("inf")
    machine = TelephonyStateMachine(clock, dialogWatchdog=forever, earlyLifetime=forever,
                                    bindingGrace=0.0)
    machine.restore(report.snapshot)
    return machine.stateOf(report.aor)


def _reportDict(report: UserReport, now: float) -> dict[str, Any]:
    return {
        "gateway": report.owner,
        "aor": report.aor,
        "telephony": telephonyState(report, now).value,
        "bindings": [
            {"contact": encodeKey(b.contact), "expires_in": round(b.expiresAt - now, 1)}
            for b in report.snapshot.bindings
        ],
        "dialogs": [
            {
                "dialog": encodeKey(d.dialogId),
                "state": _dialogState(d.confirmed, d.held),
                "ends_in": round(d.expiresAt - now, 1),
            }
            for d in report.snapshot.dialogs
        ],
        "xmpp": None if report.session is None else {
            "state": report.session.state,
            "detail": report.session.detail,
            "since": report.session.updatedAt,
        },
        "saved_statuses": [
            {"resource": s.resource, "status": s.status, "priority": s.priority,
             "message": s.message, "saved_at": s.savedAt}
            for s in report.statuses
        ],
    }


def _dialogState(confirmed: bool, held: bool) -> str:
    if not confirmed:
        return "early"
    return "held" if held else "confirmed"


def describeReports(
    reports: Sequence[UserReport], now: float, asJSON: bool = False
) -> Iterator[str]:
    """
    Yield the lines that describe C{reports}: per user a header line
    C{AOR<TAB>TELEPHONY-STATE<TAB>xmpp=STATE<TAB>gateway=NAME}, then one
    indented line per binding, dialog and saved status; or one JSON array.
    """
    if asJSON:
        yield json.dumps([_reportDict(r, now) for r in reports], indent=2)
        return
    if not reports:
        yield "no saved runtime state"
        return
    for report in reports:
        session = report.session
        xmpp = "unknown" if session is None else session.state
        yield "\t".join((report.aor, telephonyState(report, now).value, f"xmpp={xmpp}",
                         f"gateway={report.owner}"))
        for b in report.snapshot.bindings:
            yield f"  binding {encodeKey(b.contact)} expires in {b.expiresAt - now:.0f} s"
        for d in report.snapshot.dialogs:
            yield (f"  dialog {encodeKey(d.dialogId)} {_dialogState(d.confirmed, d.held)}, "
                   f"ends in {d.expiresAt - now:.0f} s")
        if session is not None and session.detail:
            yield f"  xmpp {session.state}: {session.detail} ({now - session.updatedAt:.0f} s ago)"
        for s in report.statuses:
            yield (f"  saved status of {s.resource}: status={s.status} "
                   f"message={s.message!r} priority={s.priority}")
