"""
Binding contacts and dialog ids as text for the runtime state tables.

The state machine keys bindings and dialogs by any hashable the SIP
observer chose; the ones that can be saved are strings, integers, and
tuples of those (e.g. C{(call_id, local_tag, remote_tag)}). They are
written as compact JSON (tuples as arrays) and read back as the same
values, so a restored dialog matches the BYE that ends it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any


class UnencodableKey(ValueError):
    """
    A key is not made of strings, integers and tuples.
    """


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        raise UnencodableKey(f"cannot save key part of type {type(value).__name__}")
    if isinstance(value, str | int):
        return value
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    raise UnencodableKey(f"cannot save key part of type {type(value).__name__}")


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    raise UnencodableKey(f"unexpected saved key part {value!r}")


def encodeKey(key: Hashable) -> str:
    """
    Return C{key} as text.

    @raise UnencodableKey: if it is not made of str, int and tuples.
    """
    return json.dumps(_plain(key), separators=(",", ":"), ensure_ascii=False)


def decodeKey(text: str) -> Hashable:
    """
    Return the key that L{encodeKey} turned into C{text}.

    @raise UnencodableKey: if C{text} is not such a key.
    """
    try:
        value = json.loads(text)
    except ValueError:
        raise UnencodableKey(f"saved key {text[:60]!r} is not JSON") from None
    return _hashable(value)
