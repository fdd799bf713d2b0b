"""
The routes back to the phones, shared by the SIP workers through the main
process.

A worker learns a phone's route (a binding the registrar granted, a
phone's dialog contact: L{PhoneRoutes}) and tells the main process
(L{RouteSync}, a C{route} event); the main process keeps them all in one
L{PhoneRoutes} (saved by the store's persister and restored at start, as
with one process) and passes each change on to the other workers, and
every route to a worker that (re)connects. So a worker started again
after a crash reaches the phones at once, and a request routed by any
worker (a far end's BYE for a call another worker set up) finds its phone
over UDP. A TCP or TLS flow stays a connection of the worker that has it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sipxmpp.processes.channel import Uplink
from sipxmpp.sip.core.peer import Peer
from sipxmpp.sip.core.phoneroutes import PhoneRoutes
from sipxmpp.sip.core.registrations import Binding, ContactKey, Registrations

REGISTRATION = "registration"
DIALOG_TARGET = "dialog"

#: One route as the channel carries it: kind, contact key, binding (None:
#: gone).
Route = list[Any]


def tables(routes: PhoneRoutes) -> dict[str, Registrations]:
    """
    The tables of C{routes} by kind.
    """
    return {REGISTRATION: routes.registrations, DIALOG_TARGET: routes.dialogTargets}


def encodeBinding(binding: Binding | None) -> dict[str, Any] | None:
    if binding is None:
        return None
    return {"aor": binding.aor, "contact": binding.contact, "flow": list(binding.flow),
            "expiresAt": binding.expiresAt,
            "source": list(binding.source) if binding.source is not None else None}


def decodeRoute(route: Route) -> tuple[str, ContactKey, Binding | None]:
    """
    C{(kind, key, binding)} from what the channel carried.

    @raise ValueError: if it is not a route.
    """
    try:
        kind, key, binding = route
        user, host, port, gruu = key
        contactKey: ContactKey = (str(user), str(host), int(port), str(gruu))
        if kind not in (REGISTRATION, DIALOG_TARGET):
            raise ValueError(kind)
        if binding is None:
            return kind, contactKey, None
        source = binding.get("source")
        return kind, contactKey, Binding(
            str(binding["aor"]), str(binding["contact"]), Peer(*binding["flow"]),
            float(binding["expiresAt"]), Peer(*source) if source else None)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"not a route: {route!r}") from e


def apply(routes: PhoneRoutes, route: Route, quiet: bool = False) -> None:
    """
    Put one route into C{routes}: with C{quiet}, not reported as a change
    (to the persister, or back to the main process).

    @raise ValueError: if C{route} is not one.
    """
    kind, key, binding = decodeRoute(route)
    table = tables(routes)[kind]
    if binding is None:
        table.remove(key)
    elif quiet:
        table.restore(key, binding)
    else:
        table.update(key, binding)


def everyRoute(routes: PhoneRoutes) -> list[Route]:
    """
    Every live route of C{routes}, as the channel carries them.
    """
    return [[kind, list(key), encodeBinding(binding)]
            for kind, table in tables(routes).items() for key, binding in table.items()]


class RouteSync:
    """
    A worker's side: each change of its routes goes to the main process;
    the routes the main process sends are put in without being sent back.
    """

    def __init__(self, routes: PhoneRoutes, uplink: Uplink) -> None:
        self._routes = routes
        self._uplink = uplink
        self._applying = False
        for kind, table in tables(routes).items():
            table.onChange = lambda key, kind=kind, table=table: self._changed(kind, table, key)

    def _changed(self, kind: str, table: Registrations, key: ContactKey) -> None:
        if not self._applying:
            self._uplink.event("route", kind, list(key), encodeBinding(table.get(key)))

    def received(self, routes: Iterable[Route]) -> None:
        """
        Routes from the main process (another worker's, or all at connect).
        """
        self._applying = True
        try:
            for route in routes:
                apply(self._routes, route)
        finally:
            self._applying = False
