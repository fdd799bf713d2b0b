"""
XEP-0115 entity capabilities: check a client's advertised C{ver} against
its service discovery answer before anything learned from that client is
shared with every other client that advertises the same caps.

Sans-IO: L{verificationString} reads a disco#info C{<query/>} and returns
the C{ver} it hashes to (XEP-0115 section 5.1), or raises L{CapsInvalid} for
an answer that section 5.4 says not to accept.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.words.xish import domish

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_XDATA = "jabber:x:data"
XML_LANG = "http://www.w3.org/XML/1998/namespace"

# IANA hash function names -> hashlib's.
HASHES = {
    "sha-1": "sha1",
    "sha-224": "sha224",
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}


class CapsInvalid(Exception):
    """
    The disco#info answer cannot verify a caps hash (duplicates, or a form
    with a bad C{FORM_TYPE}).
    """


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _formType(form: domish.Element) -> tuple[str | None, bool]:
    """
    Return the C{FORM_TYPE} value of C{form} and whether that field is
    hidden.

    @raise CapsInvalid: the field has values that differ.
    """
    for field in form.elements(NS_XDATA, "field"):
        if field.getAttribute("var") == "FORM_TYPE":
            values = {str(v) for v in field.elements(NS_XDATA, "value")}
            if len(values) > 1:
                raise CapsInvalid("FORM_TYPE with different values")
            return (values.pop() if values else None, field.getAttribute("type") == "hidden")
    return (None, False)


def verificationString(query: domish.Element) -> bytes:
    """
    Return the XEP-0115 verification string S of a disco#info C{<query/>}.

    @raise CapsInvalid: for an answer section 5.4 says to reject: two equal
        identities, two equal features, two forms with one C{FORM_TYPE}.
    """
    identities: list[tuple[bytes, bytes, bytes, bytes]] = []
    features: list[bytes] = []
    forms: list[tuple[bytes, domish.Element]] = []
    for child in query.elements():
        if child.uri == NS_DISCO_INFO and child.name == "identity":
            lang = child.attributes.get((XML_LANG, "lang")) or child.getAttribute("xml:lang")
            identities.append((_utf8(child.getAttribute("category") or ""),
                               _utf8(child.getAttribute("type") or ""),
                               _utf8(lang or ""),
                               _utf8(child.getAttribute("name") or "")))  # fmt: skip
        elif child.uri == NS_DISCO_INFO and child.name == "feature":
            features.append(_utf8(child.getAttribute("var") or ""))
        elif child.uri == NS_XDATA and child.name == "x":
            formType, hidden = _formType(child)
            if formType is None or not hidden:
                continue  # ignored, as section 5.4 says
            forms.append((_utf8(formType), child))
    if len(set(identities)) != len(identities):
        raise CapsInvalid("duplicate identity")
    if len(set(features)) != len(features):
        raise CapsInvalid("duplicate feature")
    if len({t for t, _ in forms}) != len(forms):
        raise CapsInvalid("duplicate FORM_TYPE")

    s = bytearray()
    for identity in sorted(identities):
        s += b"/".join(identity) + b"<"
    for feature in sorted(features):
        s += feature + b"<"
    for typeName, form in sorted(forms, key=lambda f: f[0]):
        s += typeName + b"<"
        fields: list[tuple[bytes, list[bytes]]] = []
        for field in form.elements(NS_XDATA, "field"):
            var = field.getAttribute("var")
            if var is None or var == "FORM_TYPE":
                continue
            values = sorted(_utf8(str(v)) for v in field.elements(NS_XDATA, "value"))
            fields.append((_utf8(var), values))
        for var, values in sorted(fields, key=lambda f: f[0]):
            s += var + b"<"
            for value in values:
                s += value + b"<"
    return bytes(s)


def computeVer(query: domish.Element, hashName: str) -> str:
    """
    Return the C{ver} a disco#info C{<query/>} hashes to with C{hashName}
    (an IANA name such as C{sha-1}).

    @raise CapsInvalid: as L{verificationString}, or the hash is not
        supported.
    """
    algorithm = HASHES.get(hashName.lower())
    if algorithm is None:
        raise CapsInvalid(f"unsupported hash {hashName!r}")
    digest = hashlib.new(algorithm, verificationString(query)).digest()
    return base64.b64encode(digest).decode("ascii")


def verifies(query: domish.Element, hashName: str, ver: str) -> bool:
    """
    Tell whether C{query} (a disco#info answer for C{node#ver}) hashes to
    C{ver}.
    """
    try:
        return computeVer(query, hashName) == ver
    except CapsInvalid:
        return False
