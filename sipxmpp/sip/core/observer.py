"""
From what the proxy forwards to telephony events.

L{TelephonyObserver} watches request/response pairs (as an
L{IProxyObserver}) and drives the L{TelephonyStateMachine}:

  - REGISTER 2xx from the registrar: the contacts it lists, with their
    C{expires} parameter or the Expires header, are the AoR's bindings;
    contacts it no longer lists are gone;
  - INVITE: a provisional response with a To tag is an early (ringing)
    dialog, a 2xx a confirmed one (with its Session-Expires); a failure or a
    timeout ends every early dialog of the call, and a 2xx ends the other
    forks' early dialogs;
  - re-INVITE and UPDATE 2xx: SDP C{sendonly}/C{inactive} holds the call,
    C{sendrecv} resumes it, and either refreshes its lifetime;
  - the ACK of a 2xx sets the answered call up: without one within 64*T1
    it ends (the caller gave up, or the answer was lost on its way);
  - BYE ends the dialog; a 481 to an in-dialog request too.

Each leg concerns one of our users: the caller for a phone's request, the
callee for a request the registrar routes to a phone. A call between two of
our users passes the proxy twice and updates both. The proxy names the user
(L{Leg.aor}): an anonymous caller (RFC 3323) by the registration of the
phone's address, never by an identity the phone asserts (RFC 3325); the
callee by the registered contact, whatever the caller's identity.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from twisted.logger import Logger
from zope.interface import implementer

from sipxmpp.sip.core.proxy import IProxyObserver, Leg
from sipxmpp.sip.core.registrations import grantedContacts
from sipxmpp.sip.wire.errors import SIPParseError
from sipxmpp.sip.wire.message import SIPMessage, SIPRequest, SIPResponse
from sipxmpp.sip.wire.sdp import isHold
from sipxmpp.sip.wire.uri import URI

DialogKey = tuple[str, str, str]
CallKey = tuple[str, str, str | None]  # (aor, Call-ID, caller's tag)


def dialogKey(message: SIPMessage) -> DialogKey:
    """
    Identify a dialog the same way from both ends: Call-ID and both tags,
    in a fixed order (a BYE from the callee has From and To swapped).
    """
    fromTag, toTag = message.fromTag or "", message.toTag or ""
    if toTag < fromTag:  # the same order as sorted(), without building a list
        return (message.callID, toTag, fromTag)
    return (message.callID, fromTag, toTag)


class TelephonyEvents(Protocol):
    """
    What the observer tells: a L{sipxmpp.telephony.state.TelephonyStateMachine}
    in one process, or in a SIP worker process the channel that carries
    each call to the machine in the main process.
    """

    def bindingUpdated(self, aor: str, contact: Hashable, expires: float) -> None: ...

    def bindingRemoved(self, aor: str, contact: Hashable) -> None: ...

    def dialogEarly(self, aor: str, dialogId: Hashable, outgoing: bool = False) -> None: ...

    def dialogConfirmed(self, aor: str, dialogId: Hashable, sessionExpires: float | None = None,
                        awaitAck: bool = False) -> None: ...

    def dialogAcknowledged(self, aor: str, dialogId: Hashable) -> None: ...

    def dialogRefreshed(self, aor: str, dialogId: Hashable,
                        sessionExpires: float | None = None) -> None: ...

    def dialogHeld(self, aor: str, dialogId: Hashable) -> None: ...

    def dialogActive(self, aor: str, dialogId: Hashable,
                     sessionExpires: float | None = None) -> None: ...

    def dialogTerminated(self, aor: str, dialogId: Hashable) -> None: ...


@implementer(IProxyObserver)
class TelephonyObserver:
    """
    Turns forwarded SIP into L{TelephonyStateMachine} events.

    @param aorOf: normalises a To URI into an AoR (for REGISTER), or C{None}.
    """

    log = Logger()

    def __init__(self, state: TelephonyEvents, aorOf: Callable[[URI], str | None]) -> None:
        self.state = state
        self._aorOf = aorOf
        self._contacts: dict[str, set[str]] = {}
        self._early: dict[CallKey, set[DialogKey]] = {}

    def requestForwarded(self, request: SIPRequest, leg: Leg) -> None:
        if leg.aor is None:
            return
        method = request.method
        if method == "BYE":
            self.state.dialogTerminated(leg.aor, dialogKey(request))
        elif method == "ACK":
            # Only the ACK of a 2xx is forwarded (a non-2xx's is absorbed
            # by its transaction): the answered call is set up.
            self.state.dialogAcknowledged(leg.aor, dialogKey(request))

    def responseForwarded(self, request: SIPRequest, response: SIPResponse, leg: Leg) -> None:
        try:
            method = request.method
            if method == "REGISTER":
                if leg.fromPhone and 200 <= response.code < 300:
                    self._registered(request, response)
            elif leg.aor is None:
                return
            elif method == "INVITE" and request.toTag is None:
                self._inviteResponse(leg.aor, request, response, outgoing=leg.fromPhone)
            elif method in ("INVITE", "UPDATE"):
                self._midDialog(leg.aor, request, response)
            elif response.code == 481 and request.toTag is not None:
                self.state.dialogTerminated(leg.aor, dialogKey(request))
        except SIPParseError as error:
            # A header we need is malformed; the message was still forwarded.
            self.log.info("cannot observe {response!r} to {request!r}: {error}",
                          response=response, request=request, error=error)

    # --- registrations ---

    def _registered(self, request: SIPRequest, response: SIPResponse) -> None:
        aor = self._aorOf(request.toAddr.uri)
        if aor is None:
            return
        current: dict[str, int] = {}
        for contact, expires in grantedContacts(response):
            if expires > 0:
                current[contact.uriText] = expires
        previous = self._contacts.get(aor, set())
        for uri in previous - current.keys():
            self.state.bindingRemoved(aor, uri)
        for uri, expires in current.items():
            self.state.bindingUpdated(aor, uri, expires)
        if current:
            self._contacts[aor] = set(current)
        else:
            self._contacts.pop(aor, None)

    # --- calls ---

    def _inviteResponse(self, aor: str, request: SIPRequest, response: SIPResponse,
                        outgoing: bool) -> None:
        code = response.code
        call = (aor, request.callID, request.fromTag)
        if code < 200:
            if code > 100 and response.toTag is not None:
                key = dialogKey(response)
                early = self._early.get(call)
                if early is None:
                    early = self._early[call] = set()
                early.add(key)
                self.state.dialogEarly(aor, key, outgoing)
            return
        forks = self._early.pop(call, None)
        if code < 300:
            key = dialogKey(response)
            if forks is not None:
                forks.discard(key)
            # Its ACK comes through us too (we record-route): without one
            # the session never started.
            self.state.dialogConfirmed(aor, key, self._sessionExpires(response, request),
                                       awaitAck=True)
        if forks:
            for key in forks:
                self.state.dialogTerminated(aor, key)

    def _midDialog(self, aor: str, request: SIPRequest, response: SIPResponse) -> None:
        key = dialogKey(request)
        if response.code == 481:
            self.state.dialogTerminated(aor, key)
            return
        if not 200 <= response.code < 300:
            return
        held = isHold(request.body) if request.body else None
        if held is True:
            self.state.dialogHeld(aor, key)
        elif held is False:
            self.state.dialogActive(aor, key, self._sessionExpires(response, request))
        else:
            self.state.dialogRefreshed(aor, key, self._sessionExpires(response, request))

    @staticmethod
    def _sessionExpires(response: SIPResponse, request: SIPRequest) -> float | None:
        value = response.sessionExpires or request.sessionExpires
        return float(value.seconds) if value is not None else None
