"""
RFC 3863 PIDF documents (C{application/pidf+xml}) with RFC 4480 RPID,
written: the counterpart of L{sipxmpp.sip.wire.pidf}, which reads them.

L{buildPresence} writes one tuple with the basic status (open or closed)
and, after RFC 4479's data model, one person with the RPID activities and
the note; the note is also the tuple's C{<note>}, which clients that know
only RFC 3863 show. Every text is escaped, and characters XML 1.0 cannot
carry at all (controls other than tab, CR and LF; unpaired surrogates) are
dropped, so whatever a status text holds, the document is well formed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from xml.sax.saxutils import escape, quoteattr

from sipxmpp.sip.wire.pidf import DATA_MODEL_NAMESPACE, NAMESPACE, RPID_NAMESPACE

__all__ = ["ACTIVITIES", "buildPresence", "xmlText"]

#: The RPID activities the builder writes (RFC 4480 §3.2 has more).
ACTIVITIES = frozenset(("away", "busy", "on-the-phone", "appointment", "meeting", "meal",
                        "vacation", "unknown"))  # fmt: skip

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xmlText(text: str) -> str:
    """
    C{text} without the characters XML 1.0 cannot carry.
    """
    return _NOT_XML.sub("", text)


def buildPresence(
    entity: str,
    basic: str = "open",
    activities: Iterable[str] = (),
    note: str = "",
    tupleId: str = "sipxmpp",
    contact: str | None = None,
) -> bytes:
    """
    A PIDF document for C{entity}, UTF-8.

    @param entity: the presentity's URI (C{sip:alice@example.test}).
    @param basic: C{"open"} or C{"closed"}.
    @param activities: RPID activity names, of L{ACTIVITIES}.
    @param note: a free text (empty: no note).
    @param tupleId: the tuple's id (an XML ID: a letter first).
    @param contact: the tuple's contact URI, if any.
    @raise ValueError: for another basic value, an unknown activity or a
        tuple id that is not a plain name.
    """
    if basic not in ("open", "closed"):
        raise ValueError(f"basic must be open or closed, not {basic!r}")
    names = list(dict.fromkeys(activities))
    unknown = [name for name in names if name not in ACTIVITIES]
    if unknown:
        raise ValueError(f"unknown RPID activities: {unknown}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9._-]*", tupleId):
        raise ValueError(f"not an XML ID: {tupleId!r}")
    note = xmlText(note).strip()
    noteText = escape(note)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<presence xmlns="{NAMESPACE}" xmlns:dm="{DATA_MODEL_NAMESPACE}" '
        f'xmlns:rpid="{RPID_NAMESPACE}" entity={quoteattr(xmlText(entity))}>\n',
        f' <tuple id="{tupleId}">\n  <status><basic>{basic}</basic></status>\n',
    ]
    if contact:
        parts.append(f"  <contact>{escape(xmlText(contact))}</contact>\n")
    if note:
        parts.append(f"  <note>{noteText}</note>\n")
    parts.append(" </tuple>\n")
    if names or note:
        parts.append(f' <dm:person id="p-{tupleId}">\n')
        if names:
            inner = "".join(f"<rpid:{name}/>" for name in names)
            parts.append(f"  <rpid:activities>{inner}</rpid:activities>\n")
        if note:
            parts.append(f"  <dm:note>{noteText}</dm:note>\n")
        parts.append(" </dm:person>\n")
    parts.append("</presence>\n")
    return "".join(parts).encode("utf-8")
