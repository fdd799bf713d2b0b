"""
Process-wide counters and gauges rendered in the Prometheus text format.

Protocol code increments counters by name (for example when a malformed SIP
message is dropped); the ops web service renders them at C{/metrics}. Kept
dependency-free: a dict lookup and an add on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from sipxmpp.sip.core.metrics import IMetrics


@implementer(IMetrics)
class Metrics:
    """
    A registry of named counters (monotonic) and gauges (sampled on render).
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._help: dict[str, str] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def describe(self, name: str, text: str) -> None:
        """
        Set the C{# HELP} text of metric C{name}.
        """
        self._help[name] = text

    def increment(self, name: str, amount: float = 1, **labels: str) -> None:
        """
        Add C{amount} to counter C{name} with the given labels.
        """
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0) + amount

    def value(self, name: str, **labels: str) -> float:
        """
        Return the current value of a counter (0 if never incremented).
        """
        return self._counters.get((name, tuple(sorted(labels.items()))), 0)

    def gauge(self, name: str, sample: Callable[[], float], text: str = "") -> None:
        """
        Register a gauge whose value is read from C{sample()} at render time.
        """
        self._gauges[name] = sample
        if text:
            self._help[name] = text

    def render(self) -> str:
        """
        Return all metrics in the Prometheus text exposition format.
        """
        lines: list[str] = []
        seen: set[str] = set()
        for (name, labels), count in sorted(self._counters.items()):
            if name not in seen:
                seen.add(name)
                if name in self._help:
                    lines.append(f"# HELP {name} {self._help[name]}")
                lines.append(f"# TYPE {name} counter")
            lines.append(f"{name}{_labels(labels)} {_number(count)}")
        for name, sample in sorted(self._gauges.items()):
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {_number(sample())}")
        return "\n".join(lines) + "\n"


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for k, v in labels
    )
    return "{" + inner + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
