"""
The folder layout is the architecture: imports follow the data flow.

Reads the import statements of every module of C{sipxmpp/} (no import is
executed) and checks the package graph: no cycle between packages, the
telephony state imports nothing else of ours, and inside C{sip/} the wire
format imports neither the proxy core nor the Twisted shell, and the core
does not import the shell.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import sipxmpp

SOURCE = Path(sipxmpp.__file__).parent


def importGraph(depth: int) -> dict[str, set[str]]:
    """
    Edges between units of C{sipxmpp}: with C{depth=1} the top-level packages
    (C{sip}, C{xmpp}, ...), with C{depth=2} also their subpackages
    (C{sip.wire}, C{sip.core}, ...).
    """

    def unit(module: str) -> str | None:
        parts = module.split(".")
        if parts[0] != "sipxmpp" or len(parts) < 2:
            return None
        return ".".join(parts[1 : 1 + depth])

    edges: dict[str, set[str]] = {}
    for path in SOURCE.rglob("*.py"):
        module = ".".join(("sipxmpp", *path.relative_to(SOURCE).with_suffix("").parts))
        me = unit(module.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                other = unit(name)
                if me and other and other != me and (SOURCE / other.replace(".", "/")).exists():
                    edges.setdefault(me, set()).add(other)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """
    Every cycle found by a depth-first walk (each reported from its
    smallest member).
    """
    found: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                loop = path[path.index(nxt) :]
                start = loop.index(min(loop))
                found.add(tuple(loop[start:] + loop[:start]))
            else:
                walk(nxt, path + [nxt])

    for node in sorted(edges):
        walk(node, [node])
    return [list(c) for c in sorted(found)]


class LayeringTests(SynchronousTestCase):
    def test_graphIsRead(self) -> None:
        """
        The reader sees the edges that must exist (a reader that found
        nothing would pass every other test).
        """
        edges = importGraph(1)
        self.assertIn("telephony", edges["sip"])
        self.assertIn("sip", edges["tap"])

    def test_cycleFinder(self) -> None:
        """
        L{cycles} finds a cycle and only that.
        """
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}),
                         [["a", "b", "c"]])  # fmt: skip
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}}), [])

    def test_noPackageCycles(self) -> None:
        """
        No cycle between the packages of C{sipxmpp}.
        """
        self.assertEqual(cycles(importGraph(1)), [])

    def test_telephonyImportsNothingOfOurs(self) -> None:
        """
        The telephony state is pure: it imports no other package of ours.
        """
        self.assertEqual(importGraph(1).get("telephony", set()), set())

    def test_sipLayers(self) -> None:
        """
        Inside C{sip/}: the wire format imports neither the proxy core nor
        the Twisted shell; the core does not import the shell.
        """
        edges = importGraph(2)
        self.assertEqual(edges.get("sip.wire", set()) & {"sip.core", "sip.shell"}, set())
        self.assertNotIn("sip.shell", edges.get("sip.core", set()))
        self.assertEqual(cycles(edges), [])

    def test_onlyTapAndConfigSeeEverything(self) -> None:
        """
        The SIP, XMPP, store and telephony packages never import the
        composition (C{tap}, C{config}) or operations (C{ops}).
        """
        edges = importGraph(1)
        for package in ("sip", "xmpp", "store", "telephony"):
            self.assertEqual(edges.get(package, set()) & {"tap", "config", "ops"}, set(),
                             package)  # fmt: skip

    def test_testingIsTestOnly(self) -> None:
        """
        No package of the gateway imports the test launchers
        (C{sipxmpp.testing}, which is never installed).
        """
        edges = importGraph(1)
        self.assertEqual(sorted(p for p, deps in edges.items() if "testing" in deps), [])

    def test_modulesStaySmall(self) -> None:
        """
        A module does one job: none is over 900 lines.
        """
        big = [str(path.relative_to(SOURCE)) for path in SOURCE.rglob("*.py")
               if path.read_text(encoding="utf-8").count("\n") > 900]
        self.assertEqual(big, [])
