"""
SIP wire format (sans-IO): bytes to messages and back.

Grammar, URIs, header values, the lazy byte-exact message, the stream
framer, SDP. Imports nothing else of C{sipxmpp.sip}.
"""
