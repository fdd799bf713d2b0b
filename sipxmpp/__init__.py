"""
sipxmpp: a dialog-aware SIP edge proxy that puts a phone's call state into the
user's XMPP presence.
"""

__version__ = "0.1.0"
