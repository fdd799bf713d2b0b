"""
SIP proxy core (sans-IO, injected clock): transactions, timers, the
registrations the proxy routes by, the proxy itself and its observer.

Imports the wire format, never the Twisted shell.
"""
