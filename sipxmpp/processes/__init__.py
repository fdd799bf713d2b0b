"""
The gateway's processes: with C{[sip] workers} above 1 the main process
(twistd) supervises SIP worker processes (L{supervisor}), each running the
SIP shell and proxy core on a reactor of its own (L{worker}), and takes
their telephony events over a framed channel (L{channel}).
"""
