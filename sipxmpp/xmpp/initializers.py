"""
Resource binding and session establishment for the gateway's streams:
twisted.words' initializers, minus what a login storm need not pay for.

  - L{SessionInitializer} skips RFC 3921's session request when the
    server marks it C{<optional/>} (RFC 6121 dropped it; Prosody and
    ejabberd mark it so): one round trip and one iq less per login.
  - L{BindInitializer} keeps the JID it asked for when the server binds
    exactly that one, instead of parsing the answer again (stringprep of
    the JID is a tenth of a login's CPU in Python).
"""

from __future__ import annotations

from typing import Any

from twisted.words.protocols.jabber import client, xmlstream
from twisted.words.xish import domish

from sipxmpp.xmpp.jids import parseJID

__all__ = ["BindInitializer", "SessionInitializer", "replaceInitializers"]


class BindInitializer(client.BindInitializer):
    """
    Resource binding (RFC 6120 section 7).
    """

    def onBind(self, iq: domish.Element) -> None:
        bind = iq.bind
        if bind is None or bind.jid is None:
            return
        bound = str(bind.jid)
        authenticator = self.xmlstream.authenticator
        if bound != authenticator.jid.full():
            authenticator.jid = parseJID(bound)


class SessionInitializer(client.SessionInitializer):
    """
    Session establishment (RFC 3921 section 3), only where the server
    requires it.
    """

    def initialize(self) -> Any:
        feature = self.xmlstream.features.get(self.feature)
        if feature is not None and any(child.name == "optional" for child in feature.elements()):
            return None
        return super().initialize()


def replaceInitializers(xs: xmlstream.XmlStream) -> None:
    """
    Swap twisted.words' bind and session initializers in
    C{xs.initializers} for ours, keeping their place and requiredness.
    """
    initializers: list[Any] = xs.initializers
    for index, initializer in enumerate(initializers):
        for theirs, ours in ((client.BindInitializer, BindInitializer),
                             (client.SessionInitializer, SessionInitializer)):  # fmt: skip
            if type(initializer) is theirs:
                initializers[index] = ours(xs, required=initializer.required)
