"""
Configuration templates kept in the source tree's C{etc/} folder.

Templates use C{@NAME@} placeholders: neither Lua nor YAML gives C{@} a
meaning there, so no escaping is needed, and a placeholder left unfilled is
easy to detect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

ETC_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "etc",
)

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


def etcPath(name: str) -> str:
    """
    Return the path of C{name} in the source tree's C{etc/} folder.

    An installed copy of this package has no C{etc/} beside it; then
    C{$SIPXMPP_ETC_DIR} or the current directory's C{etc/} is used.
    """
    candidates = [ETC_DIR, os.environ.get("SIPXMPP_ETC_DIR", ""), os.path.join(os.getcwd(), "etc")]
    for directory in candidates:
        path = os.path.join(directory, name)
        if directory and os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{name} not found in {ETC_DIR} ($SIPXMPP_ETC_DIR or ./etc would do too)"
    )


def fillTemplate(template: str, values: Mapping[str, object]) -> str:
    """
    Replace every C{@NAME@} of C{template} by C{values[NAME]}.

    @raise KeyError: if the template has a placeholder without a value, so
        a new template variable cannot silently stay unfilled.
    """

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @{key}@ has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(replace, template)


def writeFromTemplate(templatePath: str, target: str, values: Mapping[str, object]) -> None:
    """
    Fill the template file at C{templatePath} and write it to C{target}.
    """
    with open(templatePath, encoding="utf-8") as f:
        text = fillTemplate(f.read(), values)
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
