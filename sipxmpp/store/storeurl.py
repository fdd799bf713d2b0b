"""
Where the store lives: the C{[store] url} setting, parsed.

  - C{sqlite:///relative/path} and C{sqlite:////absolute/path}: an SQLite
    file (relative to the working directory); C{sqlite:///:memory:} for
    tests;
  - C{postgresql://USER@HOST[:PORT]/DB[?PARAMS]} (or C{postgres://}): a
    PostgreSQL database, handed to libpq as is. Keep a password out of the
    URL (use C{~/.pgpass} or C{passfile=}); if there is one anyway, it is
    never shown: L{StoreLocation.display} leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from sipxmpp.store.errors import StoreError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


@dataclass(frozen=True)
class StoreLocation:
    """
    @ivar kind: L{SQLITE} or L{POSTGRESQL}.
    @ivar target: the SQLite path, or the libpq connection URI.
    @ivar display: how to name the store in messages (never a password).
    """

    kind: str
    target: str = field(repr=False)
    display: str


def _redact(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    # Query parameters may hold a password too (password=...).
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parseStoreURL(url: str) -> StoreLocation:
    """
    Parse C{[store] url}.

    @raise StoreError: if it is neither an SQLite nor a PostgreSQL URL.
    """
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        path = url[len("sqlite:///") :]
        return StoreLocation(SQLITE, path, f"sqlite:///{path}")
    if url.startswith(("postgresql://", "postgres://")):
        return StoreLocation(POSTGRESQL, url, _redact(url))
    raise StoreError(
        f"unsupported store URL {_redact(url)!r}: expected sqlite:///RELATIVE, "
        "sqlite:////ABSOLUTE or postgresql://USER@HOST/DB"
    )
