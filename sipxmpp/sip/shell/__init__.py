"""
The Twisted shell around the SIP core: listening endpoints, transports
(bytes in, bytes out), overload sampling, and the composed service.
"""
