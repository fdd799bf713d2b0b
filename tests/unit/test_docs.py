"""
The reStructuredText documents render without a docutils warning: a
broken table or a dangling link target is a document an operator cannot
read on the web or in a package index.
"""

from __future__ import annotations

import glob
import io
import os

from docutils.core import publish_doctree
from docutils.utils import SystemMessage
from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def documents() -> list[str]:
    found = [os.path.join(ROOT, "README.rst")]
    for pattern in ("docs/*.rst", "bench/*.rst", "fuzz/*.rst", "tests/data/*/*.rst"):
        found += sorted(glob.glob(os.path.join(ROOT, pattern)))
    return found


class DocumentTests(SynchronousTestCase):
    def test_found(self) -> None:
        names = [os.path.relpath(path, ROOT) for path in documents()]
        for name in ("README.rst", "docs/architecture.rst", "docs/configuration.rst",
                     "docs/operations.rst", "bench/RESULTS.rst"):  # fmt: skip
            self.assertIn(name, names)

    def test_render(self) -> None:
        for path in documents():
            with open(path, encoding="utf-8") as f:
                text = f.read()
            warnings = io.StringIO()
            try:
                publish_doctree(text, source_path=path, settings_overrides={
                    "halt_level": 2, "report_level": 2, "warning_stream": warnings})  # fmt: skip
            except SystemMessage as e:
                self.fail(f"{os.path.relpath(path, ROOT)}: {e}")
