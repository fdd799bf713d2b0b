"""
Coverage-guided fuzzing of the SIP message layer with atheris (libFuzzer).

Every input goes through C{tests.unit.test_sip_fuzz.exercise}: parsed as a
UDP datagram and through the TCP/TLS stream framer, every lazy accessor
read, serialized, mutated the way a proxy mutates, and re-parsed.  Any
exception other than C{SIPParseError}, or a broken invariant (an
unmodified message that does not serialize to its own bytes, a Via push
and pop that changes the message), is a crash: libFuzzer stops and writes
the input to C{crash-<sha1>}.

Run from the repository root (bounded: C{-runs} defaults to 1,000,000)::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_message.py -runs=1000000

Any libFuzzer flag works (C{-max_total_time=600}, C{-jobs=2}, a corpus
directory to keep, ...).  The RFC 4475 torture messages (from
C{$SIPXMPP_RFC4475_DIR} or C{../shared/rfc4475}) and the test seeds are
added to the starting corpus.  To replay a crash::

    .venv/bin/python fuzz/fuzz_message.py crash-<sha1>
"""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    import atheris  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("atheris is not installed: .venv/bin/pip install atheris")

with atheris.instrument_imports(include=["sipxmpp.sip"]):
    from sipxmpp.sip.wire import (  # noqa: F401
        errors,
        fields,
        framing,
        grammar,
        headers,
        message,
        parser,
        responses,
        uri,
    )

from tests.unit.test_sip_fuzz import SEEDS, exercise  # noqa: E402


def testOneInput(data: bytes) -> None:
    """
    The libFuzzer entry point.
    """
    exercise(data)


def _seedCorpus() -> str:
    corpus = tempfile.mkdtemp(prefix="sipxmpp-fuzz-seeds-")
    for index, seed in enumerate(SEEDS):
        with open(os.path.join(corpus, f"seed{index}"), "wb") as out:
            out.write(seed)
    rfc4475 = os.environ.get("SIPXMPP_RFC4475_DIR") or os.path.join(ROOT, "..", "shared", "rfc4475")
    if os.path.isdir(rfc4475):
        for name in sorted(os.listdir(rfc4475)):
            if name.endswith(".dat"):
                with open(os.path.join(rfc4475, name), "rb") as source:
                    data = source.read()
                with open(os.path.join(corpus, name), "wb") as out:
                    out.write(data)
    return corpus


def main() -> None:
    """
    Run libFuzzer with a bounded number of runs and a seeded corpus.
    """
    args = list(sys.argv)
    flags = [arg for arg in args[1:] if arg.startswith("-")]
    inputs = [arg for arg in args[1:] if not arg.startswith("-")]
    if not any(flag.startswith(("-runs=", "-max_total_time=")) for flag in flags):
        args.append("-runs=1000000")
    if not any(flag.startswith("-max_len=") for flag in flags):
        args.append("-max_len=8192")
    if not inputs or not all(os.path.isfile(path) for path in inputs):
        # Fuzzing (not replaying files): start from the seeds.
        args.append(_seedCorpus())
    atheris.Setup(args, testOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
