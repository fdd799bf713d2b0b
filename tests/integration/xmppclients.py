"""
Desktop XMPP clients for the integration tests, on slixmpp: an independent
XMPP library, so the gateway is tested against a stack that is not its own.

Run as a subprocess and driven over stdin/stdout with one JSON object per
line, so that slixmpp's asyncio loop never meets Twisted's reactor:

  python tests/integration/xmppclients.py --jid alice@example.test/psi \\
      --password P --host 127.0.0.1 --port 5222 --ca-file ca.pem \\
      [--priority 5] [--status TEXT] [--show away] [--rc psi|none] [--reconnect]
      [--reconnect-delay SECONDS]

Commands (stdin):  {"op": "presence", "show": "away", "status": "...", "priority": 5}
                   {"op": "quit"}
Events (stdout):   {"event": "ready"}
                   {"event": "presence", "from": JID, "type": "available"|"unavailable",
                    "show": ..., "status": ..., "priority": N}
                   {"event": "rc", "from": JID, "values": {...}, "sessionid": ...}
                   {"event": "failed", "reason": "..."}
                   {"event": "disconnected"}   (with --reconnect, "ready" follows again)

With C{--rc psi} the client answers XEP-0146 C{rc#set-status} through
slixmpp's XEP-0050 plugin the way Psi does: status C{executing} with the
current values and B{no sessionid}, and the submitted priority applied --
reset to 0 when C{status-priority} is left out. Commands are accepted only
from the client's own bare JID, as Psi does. With C{--rc none} it offers no
command at all (Gajim >= 1.4.4, Conversations, Dino...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

import slixmpp
from slixmpp.stanza import Iq

NS_COMMANDS = "http://jabber.org/protocol/commands"
NODE_SET_STATUS = "http://jabber.org/protocol/rc#set-status"
NS_RC = "http://jabber.org/protocol/rc"


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class DesktopClient(slixmpp.ClientXMPP):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.jid, args.password)
        self.args = args
        self.show: str | None = args.show
        self.statusText: str = args.status
        self.priority: int = args.priority
        self.ca_certs = args.ca_file
        self.enable_direct_tls = False
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0115")
        self.register_plugin("xep_0199")
        if args.rc == "psi":
            self.register_plugin("xep_0050")
            self.add_filter("out", self._withoutSessionID)
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("presence", self._presence)
        self.add_event_handler("failed_auth", lambda _: emit(event="failed", reason="auth"))
        self.add_event_handler("disconnected", self._disconnected)
        self.quitting = False

    def _disconnected(self, reason: Any) -> None:
        emit(event="disconnected")
        if self.args.reconnect and not self.quitting:
            # Like a desktop client after a server restart: log in again,
            # with the status it had (dnd, if remote control set it).
            self.loop.call_later(self.args.reconnect_delay, self.connect, self.args.host,
                                 self.args.port)

    async def _started(self, event: Any) -> None:
        if self.args.rc == "psi":
            self.plugin["xep_0050"].add_command(node=NODE_SET_STATUS, name="Set Status",
                                         handler=self._setStatus)  # fmt: skip
        await self.get_roster()
        self.sendOwnPresence()
        emit(event="ready", jid=str(self.boundjid))

    def sendOwnPresence(self) -> None:
        self.send_presence(pshow=self.show, pstatus=self.statusText or None,
                           ppriority=self.priority)  # fmt: skip

    def _presence(self, presence: Any) -> None:
        kind = presence["type"]
        if kind not in ("available", "unavailable", "dnd", "away", "xa", "chat"):
            return
        emit(
            event="presence",
            **{"from": str(presence["from"])},
            type="unavailable" if kind == "unavailable" else "available",
            show=presence["show"] or None,
            status=presence["status"] or None,
            priority=int(presence["priority"] or 0),
        )

    # -- XEP-0146, Psi style -------------------------------------------------

    def _withoutSessionID(self, stanza: Any) -> Any:
        # Psi's command server is stateless and never sends a sessionid.
        if isinstance(stanza, Iq):
            command = stanza.xml.find(f"{{{NS_COMMANDS}}}command")
            if command is not None and command.get("node") == NODE_SET_STATUS:
                command.attrib.pop("sessionid", None)
        return stanza

    def _setStatus(self, iq: Any, session: dict[str, Any]) -> dict[str, Any]:
        if iq["from"].bare != self.boundjid.bare:
            raise slixmpp.exceptions.XMPPError("forbidden")
        payload = session["payload"]
        items = payload if isinstance(payload, list) else [payload]
        forms = [p for p in items if getattr(p, "name", None) == "x"]
        if forms and forms[0]["type"] == "submit":
            # Without a sessionid, slixmpp starts a new session for the
            # submission: the handler sees the submitted form, like Psi.
            values = forms[0].get_values()
            status = values.get("status") or "online"
            self.show = None if status == "online" else status
            message = values.get("status-message")
            if isinstance(message, list):
                message = "\n".join(message)
            self.statusText = message or ""
            priority = values.get("status-priority")
            self.priority = int(priority) if priority not in (None, "") else 0
            self.sendOwnPresence()
            emit(event="rc", **{"from": str(iq["from"])}, values=values,
                 sessionid=iq["command"]["sessionid"] or None)  # fmt: skip
            session["payload"] = None
            session["next"] = None
            return session
        form = self.plugin["xep_0004"].make_form("form", "Set Status")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_RC)
        form.add_field(var="status", ftype="list-single", value=self.show or "online",
                       options=[{"value": v, "label": v} for v in
                                ("chat", "online", "away", "xa", "dnd", "invisible", "offline")])  # fmt: skip
        form.add_field(var="status-priority", ftype="text-single", value=str(self.priority))
        form.add_field(var="status-message", ftype="text-multi", value=self.statusText)
        session["payload"] = form
        session["next"] = self._setStatus
        session["has_next"] = False
        return session


async def readCommands(client: DesktopClient) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["op"] == "presence":
            client.show = command.get("show")
            client.statusText = command.get("status") or ""
            client.priority = int(command.get("priority", client.priority))
            client.sendOwnPresence()
            emit(event="sent", op="presence")
        elif command["op"] == "quit":
            break
    client.quitting = True
    client.disconnect()
    await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--status", default="")
    parser.add_argument("--show", default=None)
    parser.add_argument("--rc", choices=["psi", "none"], default="none")
    parser.add_argument("--reconnect", action="store_true",
                        help="log in again (with the current status) when the server goes away")
    parser.add_argument("--reconnect-delay", type=float, default=0.3,
                        help="seconds before logging in again (with --reconnect)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("test clients only ever connect to loopback")

    async def run() -> None:
        client = DesktopClient(args)
        client.connect(args.host, args.port)
        await readCommands(client)

    asyncio.run(run())


if __name__ == "__main__":
    main()
