"""
twistd plugin: makes C{twistd sipxmpp} available.

Installed as C{twisted/plugins/sipxmpp_plugin.py}; it holds only the
L{ServiceMaker}, so importing it for C{twistd --help} stays cheap.
"""

from twisted.application.service import ServiceMaker

sipxmpp = ServiceMaker(
    "sipxmpp",
    "sipxmpp.tap",
    "SIP edge proxy that shows call state in the user's XMPP presence",
    "sipxmpp",
)
