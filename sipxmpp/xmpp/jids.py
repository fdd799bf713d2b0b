"""
JIDs made without stringprep where stringprep would only lower-case them.

twisted.words prepares every JID it parses (nodeprep, nameprep,
resourceprep) in pure Python: about 90 us for C{user@domain/resource},
several times a login for a gateway that logs in as every user (its own
full JID, each presence stanza's sender). For a JID of plain ASCII (a node
of letters, digits and C{._+-}, host-name labels without edge hyphens, a
resource of printable ASCII) that preparation lower-cases the node and the
domain and changes nothing else, so that is all these functions do; any
other JID goes through twisted.words as before.
"""

from __future__ import annotations

import re

from twisted.words.protocols.jabber.jid import JID

_NODE = r"[A-Za-z0-9._+-]+"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
# resourceprep maps nothing in printable ASCII and prohibits none of it
# (only ASCII control characters and non-ASCII ones).
_RESOURCE = r"[\x20-\x7e]+"
_PLAIN_JID = re.compile(f"({_NODE})@({_DOMAIN})(?:/({_RESOURCE}))?")
_PLAIN_RESOURCE = re.compile(_RESOURCE)


def _made(user: str | None, host: str, resource: str | None) -> JID:
    jid: JID = JID.__new__(JID)
    jid.user = user
    jid.host = host
    jid.resource = resource
    return jid


def parseJID(text: str) -> JID:
    """
    C{JID(text)}, faster for a plain ASCII JID with a node.

    @raise twisted.words.protocols.jabber.jid.InvalidFormat: as C{JID}.
    """
    match = _PLAIN_JID.fullmatch(text)
    if match is None:
        return JID(text)
    return _made(match[1].lower(), match[2].lower(), match[3])


def withResource(bare: JID, resource: str) -> JID:
    """
    C{bare}'s user and host (already prepared: a L{JID}'s) with
    C{resource}: C{JID(tuple=(bare.user, bare.host, resource))}, without
    preparing the first two again.
    """
    if _PLAIN_RESOURCE.fullmatch(resource) is None:
        return JID(tuple=(bare.user, bare.host, resource))
    return _made(bare.user, bare.host, resource)


__all__ = ["parseJID", "withResource"]
