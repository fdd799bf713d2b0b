"""
Hardened XML for the bodies SIP carries to us (dialog-info, PIDF).

Bodies come from the network, so any DTD is refused outright: without a
DTD nothing can declare an entity, so neither entity expansion ("billion
laughs") nor external entities (XXE, e.g. C{file:///etc/passwd}) can
happen; entity declarations and external references are refused by
themselves too. These are C{defusedxml}'s checks (its exceptions, on the
same expat handlers); the tree is built by expat and the C TreeBuilder
directly, which costs half of C{defusedxml.ElementTree}'s pure-Python
parser (a PUBLISH ramp spent 17 % of the gateway's time there). Every way
a body can fail is one L{XMLBodyError} with a one-line reason.

How large a body may be is the message layer's limit
(L{sipxmpp.sip.wire.message.Limits}), not checked again here.
"""

from __future__ import annotations

from typing import NoReturn
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from sipxmpp.sip.wire.errors import SIPParseError

__all__ = ["XMLBodyError", "attribute", "checkRoot", "clip", "parseXML"]


class XMLBodyError(SIPParseError):
    """
    A body is not the XML document its Content-Type promises: malformed,
    with a DTD or entities, the wrong root element, or a required part
    missing. A server answers 400 (the request is fine, its body is not).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 400)


def clip(text: str, limit: int = 40) -> str:
    """
    Quote a piece of a body for a reason phrase: clipped, and with any
    control character escaped (a reason phrase must never hold CR or LF).
    """
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def parseXML(body: bytes, what: str) -> Element:
    """
    Parse C{body} into its root element, refusing DTDs and entities.

    @param what: names the document in error reasons (C{"dialog-info"}).
    @raise XMLBodyError: for anything but a well-formed document without
        a DTD.
    """
    try:
        return _parse(body)
    except DTDForbidden:
        raise XMLBodyError(f"{what}: a DTD is not allowed") from None
    except EntitiesForbidden:
        raise XMLBodyError(f"{what}: entity declarations are not allowed") from None
    except ExternalReferenceForbidden:
        raise XMLBodyError(f"{what}: external references are not allowed") from None
    except expat.ExpatError as error:
        # Expat's message: what and where, never a piece of the input.
        raise XMLBodyError(f"{what}: malformed XML ({error})") from None
    except (ValueError, LookupError) as error:
        # An encoding expat does not know, or cannot decode.
        raise XMLBodyError(f"{what}: unreadable XML ({type(error).__name__})") from None


def _refuseDTD(name: str, systemId: str | None, publicId: str | None,
               hasInternalSubset: bool) -> NoReturn:  # fmt: skip
    raise DTDForbidden(name, systemId, publicId)


def _refuseEntity(name: str, isParameter: bool, value: str | None, base: str | None,
                  systemId: str | None, publicId: str | None,
                  notation: str | None) -> NoReturn:  # fmt: skip
    raise EntitiesForbidden(name, value, base, systemId, publicId, notation)


def _refuseUnparsedEntity(name: str, base: str | None, systemId: str | None,
                          publicId: str | None, notation: str | None) -> NoReturn:  # fmt: skip
    raise EntitiesForbidden(name, None, base, systemId, publicId, notation)


def _refuseExternal(context: str, base: str | None, systemId: str | None,
                    publicId: str | None) -> NoReturn:  # fmt: skip
    raise ExternalReferenceForbidden(context, base, systemId, publicId)


def _parse(body: bytes) -> Element:
    builder = TreeBuilder()
    parser = expat.ParserCreate(None, "}")
    parser.StartDoctypeDeclHandler = _refuseDTD
    parser.EntityDeclHandler = _refuseEntity
    parser.UnparsedEntityDeclHandler = _refuseUnparsedEntity
    parser.ExternalEntityRefHandler = _refuseExternal
    start = builder.start

    def started(name: str, attributes: dict[str, str]) -> None:
        # Expat names a namespaced element "URI}local"; ElementTree's
        # "{URI}local" is what the readers compare with.
        if "}" in name:
            name = "{" + name
        if attributes and any("}" in key for key in attributes):
            attributes = {"{" + k if "}" in k else k: v for k, v in attributes.items()}
        start(name, attributes)

    parser.StartElementHandler = started
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    parser.Parse(body, True)
    return builder.close()


def checkRoot(root: Element, namespace: str, name: str, what: str) -> None:
    """
    Require the root element C{name} in C{namespace}.

    @raise XMLBodyError: when it is anything else.
    """
    if root.tag != f"{{{namespace}}}{name}":
        raise XMLBodyError(f"{what}: the root element is {clip(root.tag, 80)}, "
                           f"not {name} in {namespace}")  # fmt: skip


def attribute(element: Element, name: str, what: str) -> str:
    """
    The value of a required attribute, stripped.

    @raise XMLBodyError: when it is missing or empty.
    """
    value = (element.get(name) or "").strip()
    if not value:
        raise XMLBodyError(f"{what}: a {element.tag.rpartition('}')[2]} "
                           f"without {name}")  # fmt: skip
    return value
