"""
The expat parsers of the gateway's XMPP streams: one dictionary of interned
element and attribute names for all of them, and their release once a
stream is done with.
"""

from __future__ import annotations

import pyexpat

from twisted.words.xish import domish

#: Beyond this many names, new parsers start a new intern dictionary.
MAX_SHARED_NAMES = 10_000
_EXPAT_HANDLERS = ("StartElementHandler", "EndElementHandler", "CharacterDataHandler",
                   "StartNamespaceDeclHandler", "EndNamespaceDeclHandler")  # fmt: skip
_names: dict[str, str] = {}


def shareNames(stream: domish.ExpatElementStream) -> None:
    """
    Give C{stream} an expat parser whose element and attribute names are
    interned in one dictionary with every other stream's, instead of one
    per parser: 3 KB less per session (bench/RESULTS.rst). The names come
    from the server and its users' contacts, so the dictionary is bounded:
    past L{MAX_SHARED_NAMES}, new parsers share a new one.
    """
    global _names
    if len(_names) > MAX_SHARED_NAMES:
        _names = {}
    old = stream.parser
    parser = pyexpat.ParserCreate("UTF-8", " ", intern=_names)
    for handler in _EXPAT_HANDLERS:
        setattr(parser, handler, getattr(old, handler))
    stream.parser = parser


def releaseParser(stream: domish.ExpatElementStream) -> None:
    """
    Drop the parser of C{stream}, which will parse no more (the connection
    was lost, or the stream restarted): the parser's handlers are the
    element stream's methods, a reference cycle that refcounting never
    frees. Left to the garbage collector, an old connection's cycle kept
    its XmlStream, TLS state and expat state (about 30 KB a session) until
    the oldest generation was collected, long after a Prosody restart's
    reconnections had allocated their own: the RSS grew with each restart
    (issue 21). A parser still running (a restart decided in one of its
    handlers) is freed when it returns.
    """
    del stream.parser
