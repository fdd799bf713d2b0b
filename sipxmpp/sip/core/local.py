"""
Requests the gateway answers itself instead of forwarding them.

The proxy core forwards by policy; a few requests are addressed to the
gateway: PUBLISH of telephony state from the SIP core (RFC 3903,
L{sipxmpp.sip.core.publications}), NOTIFY for the gateway's own
subscriptions, and OPTIONS to the gateway's address (keepalive probes such
as Kamailio dispatcher's, RFC 3261 §11). An L{ILocalHandler} says which
requests it takes and answers each once; the proxy runs the server
transaction around it, so a retransmission gets the same answer again.
"""

from __future__ import annotations

from collections.abc import Iterable

from zope.interface import Attribute, Interface, implementer

from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.wire.message import SIPRequest, SIPResponse
from sipxmpp.sip.wire.responses import makeResponse
from sipxmpp.sip.wire.uri import SIPURI


class ILocalHandler(Interface):
    """
    Takes some requests addressed to the gateway itself. Its own policy
    decides who may send them (the proxy's trusted networks do not apply).
    """

    methods = Attribute("frozenset of the methods it may take")

    def accepts(request: SIPRequest, source: Peer, forwarding: bool) -> bool:
        """
        Is C{request} (of one of C{methods}) for the gateway rather than to
        be forwarded? C{forwarding} tells whether the proxy has an upstream.
        """

    def answer(request: SIPRequest, source: Peer) -> SIPResponse:
        """
        The final response to C{request}; called once per transaction.
        """


@implementer(ILocalHandler)
class OptionsResponder:
    """
    Answers OPTIONS addressed to the gateway itself (no user part, one of
    its own addresses) with 200 OK, for keepalive probes; OPTIONS to a
    user is forwarded like any request.

    @param local: the gateway's own transport addresses.
    @param allow: the methods to list in Allow.
    """

    methods = frozenset({"OPTIONS"})

    def __init__(self, local: Iterable[Peer], allow: Iterable[str]) -> None:
        self._ours = {(peer.host.lower(), peer.port) for peer in local}
        self._allow = ", ".join(sorted(set(allow) | {"OPTIONS"}))

    def accepts(self, request: SIPRequest, source: Peer, forwarding: bool) -> bool:
        uri = request.uri
        if not isinstance(uri, SIPURI) or uri.user:
            return False
        port = uri.port or (5061 if uri.secure else 5060)
        return not forwarding or (uri.host.lower().strip("[]"), port) in self._ours

    def answer(self, request: SIPRequest, source: Peer) -> SIPResponse:
        return makeResponse(request, 200, "OK", headers=(("Allow", self._allow),))


def checkLifetimes(what: str, minimum: int, default: int, maximum: int) -> None:
    """
    Check the bounds of the lifetimes a handler grants (PUBLISH,
    SUBSCRIBE).

    @raise ValueError: unless 0 < minimum <= default <= maximum.
    """
    if not 0 < minimum <= default <= maximum:
        raise ValueError(f"{what} lifetimes must be 0 < min ({minimum}) <= default "
                         f"({default}) <= max ({maximum})")  # fmt: skip


def grantedExpires(requested: int | None, minimum: int, default: int,
                   maximum: int) -> int | None:  # fmt: skip
    """
    The lifetime granted for an Expires of C{requested} (RFC 3903 §6,
    RFC 6665 §4.2.1.1): C{default} when absent, 0 as asked, at most
    C{maximum}; L{None} when it is shorter than C{minimum}, to be answered
    423 with Min-Expires.
    """
    if requested is None:
        return default
    if 0 < requested < minimum:
        return None
    return min(requested, maximum)
