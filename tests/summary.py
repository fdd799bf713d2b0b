"""
Turn trial's closing line into the plain "N passed, N failed" line CI reads.

trial ends with e.g. ``PASSED (skips=2, successes=40)`` or
``FAILED (failures=1, errors=2, successes=39)``; this prints
``trial: 40 passed, 0 failed, 2 skipped`` and exits non-zero on failure or
when no test ran, so a broken suite can never look green.
"""

import re
import sys


def main(path: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    verdict = next((line for line in reversed(lines) if re.match(r"^(PASSED|FAILED)\b", line)), None)
    if verdict is None:
        print("trial: 0 passed, 1 failed (no closing line from trial)")
        return 1
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", verdict)}
    passed = counts.get("successes", 0)
    failed = sum(counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
    skipped = counts.get("skips", 0)
    print(f"trial: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if verdict.startswith("PASSED") and passed > 0 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
