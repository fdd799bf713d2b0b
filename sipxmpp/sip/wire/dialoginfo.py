"""
RFC 4235 dialog-info documents (C{application/dialog-info+xml}), read.

L{parseDialogInfo} turns a body into a L{DialogInfo}: the document's
version, whether it is full or partial state, its entity, and per dialog
(RFC 4235 §4.1) the id, Call-ID, tags, direction, state with its event and
code (§4.1.2), and the local target's C{+sip.rendering} parameter
(§4.1.6.2: C{"no"} means the user's device does not render the media,
i.e. the call is held). Only what the telephony state needs is read;
identities, routes, durations and extensions are skipped.

Liberal where publishers differ without ambiguity: state values are
case-insensitive (Kamailio's pua_dialoginfo sends C{Trying}), C{true} and
C{false} are read as C{+sip.rendering} values too (some phones send them),
an unknown direction or rendering value is read as absent, and the entity
may be missing (RFC 4235's own §4.4 example has none; the PUBLISH or
SUBSCRIBE names the resource anyway). Strict where the meaning would be
lost: the root element and namespace, the version and state attributes,
every dialog's id and one known state. The parser is
the hardened one of L{sipxmpp.sip.wire.xmlbody}; any failure is an
L{XMLBodyError}.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from sipxmpp.sip.wire.xmlbody import XMLBodyError, attribute, checkRoot, clip, parseXML

__all__ = [
    "CONTENT_TYPE",
    "DIALOG_STATES",
    "EARLY_STATES",
    "NAMESPACE",
    "Dialog",
    "DialogInfo",
    "XMLBodyError",
    "parseDialogInfo",
]

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"

#: The dialog states of RFC 4235 §3.7.1, lower-cased.
DIALOG_STATES = frozenset(("trying", "proceeding", "early", "confirmed", "terminated"))
#: The states of a dialog not yet answered.
EARLY_STATES = frozenset(("trying", "proceeding", "early"))

_WHAT = "dialog-info"
_DIALOG = f"{{{NAMESPACE}}}dialog"
_STATE = f"{{{NAMESPACE}}}state"
_LOCAL = f"{{{NAMESPACE}}}local"
_TARGET = f"{{{NAMESPACE}}}target"
_PARAM = f"{{{NAMESPACE}}}param"
_RENDERING = {"yes": True, "true": True, "no": False, "false": False}
# Longer than any 64-bit counter: version is an xs:nonNegativeInteger, and
# int() of an endless digit string is not free.
_MAX_VERSION_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Dialog:
    """
    One C{<dialog>} element.

    @ivar id: the dialog's id (unique among the entity's dialogs).
    @ivar state: one of L{DIALOG_STATES}, lower-cased.
    @ivar callID: the C{call-id} attribute, or L{None}.
    @ivar localTag: the C{local-tag} attribute, or L{None}.
    @ivar remoteTag: the C{remote-tag} attribute, or L{None}.
    @ivar direction: C{"initiator"} (the entity placed the call),
        C{"recipient"}, or L{None}.
    @ivar event: why the state was entered (C{"cancelled"}, C{"rejected"},
        C{"replaced"}, C{"local-bye"}, ...), lower-cased, or L{None}.
    @ivar code: the response code of the state, or L{None}.
    @ivar localRendering: the local target's C{+sip.rendering}: L{True}
        for C{"yes"}, L{False} for C{"no"} (the call is held), L{None} when
        absent or C{"unknown"}.
    """

    id: str
    state: str
    callID: str | None = None
    localTag: str | None = None
    remoteTag: str | None = None
    direction: str | None = None
    event: str | None = None
    code: int | None = None
    localRendering: bool | None = None

    @property
    def early(self) -> bool:
        """
        Is the dialog not answered yet (trying, proceeding or early)?
        """
        return self.state in EARLY_STATES

    @property
    def outgoing(self) -> bool:
        """
        Did the entity place the call?
        """
        return self.direction == "initiator"


@dataclass(frozen=True, slots=True)
class DialogInfo:
    """
    A C{<dialog-info>} document.

    @ivar version: the document's version (RFC 4235 §4.1.1.1).
    @ivar full: L{True} for full state, L{False} for partial.
    @ivar entity: the URI whose dialogs these are, or L{None}.
    @ivar dialogs: the dialogs, in document order.
    """

    version: int
    full: bool
    entity: str | None
    dialogs: tuple[Dialog, ...]


def parseDialogInfo(body: bytes) -> DialogInfo:
    """
    Read an C{application/dialog-info+xml} body.

    @raise XMLBodyError: for a malformed or hostile body, or a document
        that is not RFC 4235 dialog-info.
    """
    root = parseXML(body, _WHAT)
    checkRoot(root, NAMESPACE, "dialog-info", _WHAT)
    version = attribute(root, "version", _WHAT)
    if not (version.isdigit() and version.isascii()) or len(version) > _MAX_VERSION_DIGITS:
        raise XMLBodyError(f"{_WHAT}: version {clip(version)} is not a number")
    state = attribute(root, "state", _WHAT).lower()
    if state not in ("full", "partial"):
        raise XMLBodyError(f"{_WHAT}: state {clip(state)} is neither full nor partial")
    entity = _optional(root, "entity")
    dialogs = tuple(_dialog(element) for element in root.iterfind(_DIALOG))
    return DialogInfo(int(version), state == "full", entity, dialogs)


def _dialog(element: Element) -> Dialog:
    dialogID = attribute(element, "id", _WHAT)
    states = element.findall(_STATE)
    if len(states) != 1:
        raise XMLBodyError(f"{_WHAT}: dialog {clip(dialogID)} has {len(states)} states, not one")
    stateElement = states[0]
    state = (stateElement.text or "").strip().lower()
    if state not in DIALOG_STATES:
        raise XMLBodyError(f"{_WHAT}: dialog {clip(dialogID)} has an unknown state {clip(state)}")
    code = _optional(stateElement, "code")
    if code is not None and not (code.isdigit() and code.isascii() and len(code) == 3):
        raise XMLBodyError(f"{_WHAT}: dialog {clip(dialogID)} has a bad code {clip(code)}")
    direction = (_optional(element, "direction") or "").lower()
    event = _optional(stateElement, "event")
    return Dialog(
        id=dialogID,
        state=state,
        callID=_optional(element, "call-id"),
        localTag=_optional(element, "local-tag"),
        remoteTag=_optional(element, "remote-tag"),
        direction=direction if direction in ("initiator", "recipient") else None,
        event=event.lower() if event is not None else None,
        code=int(code) if code is not None else None,
        localRendering=_localRendering(element),
    )


def _optional(element: Element, name: str) -> str | None:
    value = element.get(name)
    if value is None:
        return None
    return value.strip() or None


def _localRendering(dialog: Element) -> bool | None:
    """
    The C{+sip.rendering} parameter of the local target (RFC 4235
    §4.1.6.2), as L{Dialog.localRendering} describes it.
    """
    for param in dialog.iterfind(f"{_LOCAL}/{_TARGET}/{_PARAM}"):
        if (param.get("pname") or "").strip().lower() == "+sip.rendering":
            return _RENDERING.get((param.get("pval") or "").strip().strip('"').lower())
    return None
