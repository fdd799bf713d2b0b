"""
The two kinds of address the store keys accounts by: a SIP address of
record (AoR) and a bare XMPP JID, each validated and normalised.

An AoR is normalised to C{sip:user@host[:port]}:

  - the scheme is lower-cased, and C{sips:} is mapped to C{sip:}: an AoR
    names a user, and SIPS only says how to reach that user (over TLS), so
    a phone registering C{sips:alice@example.test} is the same user as
    C{sip:alice@example.test} and one account serves both;
  - the user part is required and keeps its case (RFC 3261 §19.1.4 compares
    it case-sensitively); escapes of unreserved characters are decoded
    (C{%61lice} is C{alice}) and the other escapes upper-cased;
  - the host is lower-cased; a port, if given, is kept (as a number);
  - URI parameters (C{;transport=tcp}), headers (C{?subject=x}), angle
    brackets and surrounding blanks are dropped;
  - a password in the user info (C{sip:alice:secret@host}) is refused.

A JID must be bare (no resource) and have a node: C{alice@example.test}. It
is normalised by stringprep (node and domain lower-cased).
"""

from __future__ import annotations

import re

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from sipxmpp.sip.wire.uri import SIPURI, URI

__all__ = ["InvalidAddress", "aorOrNone", "normaliseAoR", "normaliseBareJID", "parseBareJID"]


class InvalidAddress(ValueError):
    """
    An AoR or JID is malformed; C{str()} says what was expected.
    """


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"
# RFC 3261 user = 1*( unreserved / escaped / user-unreserved )
_USER_CHARS = set(_UNRESERVED + "&=+$,;?/")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$"
)
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
# A bare JID of letters, digits and a few safe ASCII marks, domain labels
# without leading or trailing hyphens: stringprep (nodeprep, nameprep) only
# lower-cases it. Checked first because stringprep in pure Python costs
# about 0.4 ms a JID, most of a bulk import's time.
_PLAIN_BARE_JID = re.compile(
    r"[A-Za-z0-9._+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_AOR_EXAMPLE = "sip:alice@example.com"


def _fail(text: str, problem: str) -> InvalidAddress:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return InvalidAddress(
        f"invalid SIP address of record {shown!r}: {problem}; expected a SIP URI "
        f"like {_AOR_EXAMPLE}"
    )


def _normaliseUser(text: str, user: str) -> str:
    if not user:
        raise _fail(text, "the user part is empty")
    for index, char in enumerate(user):
        if char == "%":
            if not _ESCAPE.match(user, index):
                raise _fail(text, "a '%' in the user part is not followed by two hex digits")
        elif char not in _USER_CHARS:
            raise _fail(text, f"the user part contains {char!r}, which must be escaped")

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _ESCAPE.sub(decode, user)


def _normaliseHostPort(text: str, hostport: str) -> str:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        if end < 0 or not _IPV6.match(host):
            raise _fail(text, "the IPv6 host is malformed")
    else:
        host, colon, port = hostport.partition(":")
        rest = colon + port
        if not host or not _HOSTNAME.match(host):
            raise _fail(text, f"{host!r} is not a host name or IP address")
    host = host.lower().rstrip(".")
    if not rest:
        return host
    if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
        raise _fail(text, "the port must be a number from 1 to 65535")
    return f"{host}:{int(rest[1:])}"


def normaliseAoR(text: str) -> str:
    """
    Validate a SIP address of record and return its normal form, e.g.
    C{SIP:Alice@Example.TEST;transport=tcp} becomes
    C{sip:Alice@example.test}. See the module documentation for the rules.

    @raise InvalidAddress: with a one-line explanation.
    """
    stripped = text.strip()
    if stripped.startswith("<") and stripped.endswith(">"):
        stripped = stripped[1:-1].strip()
    scheme, colon, rest = stripped.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        if "@" in stripped and not colon:
            raise _fail(text, f"the scheme is missing (did you mean 'sip:{stripped}'?)")
        raise _fail(text, "only sip: and sips: URIs name a SIP user")
    # The user part may contain ';' and '?' but never '@'; parameters
    # (;...) and headers (?...) follow the host part.
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        raise _fail(text, "the user part is missing (an AoR names a user: user@host)")
    hostport = re.split(r"[;?]", hostpart, maxsplit=1)[0]
    if ":" in userinfo:
        raise _fail(text, "it contains a password; never put secrets in a SIP URI")
    user = _normaliseUser(text, userinfo)
    return f"sip:{user}@{_normaliseHostPort(text, hostport)}"


def parseBareJID(text: str) -> JID:
    """
    Validate a bare JID with a node (C{user@domain}) and return it,
    normalised by stringprep.

    @raise InvalidAddress: with a one-line explanation.
    """
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not text.strip():
        raise InvalidAddress("invalid JID '': it is empty; expected a bare JID like "
                             "alice@example.com")
    try:
        jid = JID(text.strip())
    except InvalidFormat as e:
        detail = str(e) or "malformed"
    except IndexError:
        # twisted.words' nameprep indexes an empty label ("a@b..c").
        detail = "an empty label in the domain"
    else:
        detail = ""
    if detail:
        raise InvalidAddress(
            f"invalid JID {shown!r}: {detail}; expected a bare JID like alice@example.com"
        ) from None
    if jid.user is None:
        raise InvalidAddress(
            f"invalid JID {shown!r}: it has no user part; expected a bare JID like "
            "alice@example.com"
        )
    if jid.resource is not None:
        raise InvalidAddress(
            f"invalid JID {shown!r}: it has a resource; expected a bare JID like "
            f"{jid.userhost()}"
        )
    return jid


def normaliseBareJID(text: str) -> str:
    """
    Validate a bare JID with a node and return its normal form as text
    (C{Alice@Example.TEST} becomes C{alice@example.test}): what
    C{parseBareJID(text).userhost()} returns, faster for plain ASCII JIDs.

    @raise InvalidAddress: with a one-line explanation.
    """
    stripped = text.strip()
    if _PLAIN_BARE_JID.fullmatch(stripped):
        return stripped.lower()
    return str(parseBareJID(text).userhost())


def aorOrNone(text: str) -> str | None:
    """
    Return the normal form of the AoR C{text}, or L{None} if it is not a
    user's SIP address.
    """
    try:
        return normaliseAoR(text)
    except InvalidAddress:
        return None


def aorOfURI(uri: URI) -> str | None:
    """
    The normal form of the AoR an already parsed From, To or Contact URI
    names (the proxy's C{aorOf}: no second parse on the SIP path), or
    L{None} if it names no user. Same rules as L{normaliseAoR}.
    """
    if not isinstance(uri, SIPURI) or not uri.rawUser or uri.password is not None:
        return None
    hostport = uri.host if uri.port is None else f"{uri.host}:{uri.port}"
    try:
        return f"sip:{_normaliseUser(uri.text, uri.rawUser)}@{_normaliseHostPort(uri.text, hostport)}"
    except InvalidAddress:
        return None
