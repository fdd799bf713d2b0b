"""
RFC 3863 PIDF documents (C{application/pidf+xml}) with RFC 4480 RPID, read.

L{parsePresence} turns a body into a L{Presence}: the entity, each tuple's
basic status (open or closed, RFC 3863 §4.1.4), contact and notes, the
document's notes (PIDF C{<note>} and the RFC 4479 data model's person
notes), and the RPID activities (RFC 4480 §3.2, e.g. C{on-the-phone},
C{busy}, C{away}) wherever the document carries them: under C{<person>}
as RFC 4479 places them, or under a tuple's status as older publishers do.

Liberal where publishers differ without ambiguity: an unknown basic value
is read as absent, elements of other namespaces are skipped. Strict about
the root element, its namespace and the entity. The parser is the hardened
one of L{sipxmpp.sip.wire.xmlbody}; any failure is an L{XMLBodyError}.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from sipxmpp.sip.wire.xmlbody import XMLBodyError, attribute, checkRoot, parseXML

__all__ = [
    "CONTENT_TYPE",
    "DATA_MODEL_NAMESPACE",
    "NAMESPACE",
    "RPID_NAMESPACE",
    "Presence",
    "PresenceTuple",
    "XMLBodyError",
    "parsePresence",
]

NAMESPACE = "urn:ietf:params:xml:ns:pidf"
RPID_NAMESPACE = "urn:ietf:params:xml:ns:pidf:rpid"
DATA_MODEL_NAMESPACE = "urn:ietf:params:xml:ns:pidf:data-model"
CONTENT_TYPE = "application/pidf+xml"

_WHAT = "PIDF"
_TUPLE = f"{{{NAMESPACE}}}tuple"
_STATUS = f"{{{NAMESPACE}}}status"
_BASIC = f"{{{NAMESPACE}}}basic"
_CONTACT = f"{{{NAMESPACE}}}contact"
_NOTE = f"{{{NAMESPACE}}}note"
_PERSON = f"{{{DATA_MODEL_NAMESPACE}}}person"
_PERSON_NOTE = f"{{{DATA_MODEL_NAMESPACE}}}note"
_ACTIVITIES = f"{{{RPID_NAMESPACE}}}activities"
_RPID_PREFIX = f"{{{RPID_NAMESPACE}}}"
# Activities may open with notes about them (RFC 4480 §3.2): not activities.
_RPID_NOTE = f"{{{RPID_NAMESPACE}}}note"


@dataclass(frozen=True, slots=True)
class PresenceTuple:
    """
    One C{<tuple>}: a way to reach the entity.

    @ivar id: the tuple's id (empty if the publisher left it out).
    @ivar basic: C{"open"}, C{"closed"}, or L{None} when absent.
    @ivar contact: the contact URI, or L{None}.
    @ivar notes: the tuple's notes, stripped.
    """

    id: str
    basic: str | None
    contact: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Presence:
    """
    A C{<presence>} document.

    @ivar entity: the presentity's URI (C{pres:} or C{sip:}).
    @ivar tuples: its tuples, in document order.
    @ivar activities: the RPID activity names found anywhere in the
        document (C{"on-the-phone"}, C{"busy"}, C{"other"}, ...).
    @ivar notes: the document's and the persons' notes, stripped.
    """

    entity: str
    tuples: tuple[PresenceTuple, ...] = ()
    activities: frozenset[str] = frozenset()
    notes: tuple[str, ...] = ()

    @property
    def open(self) -> bool:
        """
        Is any tuple open (the entity can be reached)?
        """
        return any(t.basic == "open" for t in self.tuples)


def parsePresence(body: bytes) -> Presence:
    """
    Read an C{application/pidf+xml} body.

    @raise XMLBodyError: for a malformed or hostile body, or a document
        that is not PIDF.
    """
    root = parseXML(body, _WHAT)
    checkRoot(root, NAMESPACE, "presence", _WHAT)
    entity = attribute(root, "entity", _WHAT)
    tuples = tuple(_tuple(element) for element in root.iterfind(_TUPLE))
    notes = _notes(root, _NOTE) + tuple(
        note for person in root.iterfind(_PERSON) for note in _notes(person, _PERSON_NOTE)
    )
    activities = frozenset(
        child.tag[len(_RPID_PREFIX) :]
        for element in root.iter(_ACTIVITIES)
        for child in element
        if child.tag.startswith(_RPID_PREFIX) and child.tag != _RPID_NOTE
    )
    return Presence(entity, tuples, activities, notes)


def _tuple(element: Element) -> PresenceTuple:
    basic: str | None = None
    status = element.find(_STATUS)
    if status is not None:
        basicElement = status.find(_BASIC)
        if basicElement is not None:
            value = (basicElement.text or "").strip().lower()
            basic = value if value in ("open", "closed") else None
    contactElement = element.find(_CONTACT)
    contact = (contactElement.text or "").strip() or None if contactElement is not None else None
    return PresenceTuple((element.get("id") or "").strip(), basic, contact, _notes(element, _NOTE))


def _notes(element: Element, tag: str) -> tuple[str, ...]:
    return tuple(text for note in element.iterfind(tag) if (text := (note.text or "").strip()))
