"""
The one place that imports wokkel.

wokkel 18.0.0, its last release, predates Twisted 21.2: it imports
C{twisted.python.compat._PY3} (removed) and C{wokkel.muc} imports
C{twisted.python.constants} (moved to the C{constantly} package). Both are
restored here before wokkel is imported, so every other module gets wokkel
through this one: C{from sipxmpp.xmpp.wokkelcompat import client, disco}.
"""

from __future__ import annotations

import sys

import constantly
import twisted.python
import twisted.python.compat

if not hasattr(twisted.python.compat, "_PY3"):
    twisted.python.compat._PY3 = True  # type: ignore[attr-defined]
if "twisted.python.constants" not in sys.modules:
    sys.modules["twisted.python.constants"] = constantly
    twisted.python.constants = constantly  # type: ignore[attr-defined]

from wokkel import (
    client,
    data_form,
    disco,
    generic,
    ping,
    subprotocols,
    xmppim,
)

__all__ = ["client", "data_form", "disco", "generic", "ping", "subprotocols", "xmppim"]
