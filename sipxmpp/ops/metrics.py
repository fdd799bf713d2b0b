"""
Process-wide counters, gauges and histograms rendered in the Prometheus text
format.

Protocol code increments counters by name (for example when a malformed SIP
message is dropped); the ops web service renders them at C{/metrics}. Kept
dependency-free: a dict lookup and an add on the hot path. (prometheus_client
was considered: its multi-process mode needs a shared directory and its own
collector, and the gateway is one process; the exposition format here is
the same.)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

from zope.interface import implementer

from sipxmpp.sip.core.metrics import IMetrics

# A histogram's series: the count per bucket (+Inf last) and [the sum].
_Series = tuple[list[int], list[float]]


@implementer(IMetrics)
class Metrics:
    """
    A registry of named counters (monotonic), gauges (sampled on render,
    with one label or none) and histograms (cumulative buckets).
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._help: dict[str, str] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._labeledGauges: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], _Series]] = {}

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

    def labeledGauge(self, name: str, label: str,
                     sample: Callable[[], Mapping[str, float]], text: str = "") -> None:  # fmt: skip
        """
        Register a gauge with one label: C{sample()} returns the value per
        label value at render time (e.g. sessions per state).
        """
        self._labeledGauges[name] = (label, sample)
        if text:
            self._help[name] = text

    def histogram(self, name: str, buckets: Sequence[float], text: str = "") -> None:
        """
        Declare histogram C{name} with the given upper bounds (C{+Inf} is
        added); observations of an undeclared histogram are dropped.
        """
        self._buckets[name] = tuple(sorted(buckets))
        self._histograms.setdefault(name, {})
        if text:
            self._help[name] = text

    def observe(self, name: str, value: float, **labels: str) -> None:
        """
        Record C{value} in histogram C{name}.
        """
        series = self._series(name, labels)
        if series is not None:
            series[0][bisect_left(self._buckets[name], value)] += 1
            series[1][0] += value

    def startSeries(self, name: str, **labels: str) -> None:
        """
        Show histogram C{name} with C{labels} (all zero) before its first
        observation.
        """
        self._series(name, labels)

    def _series(self, name: str, labels: dict[str, str]) -> _Series | None:
        bounds = self._buckets.get(name)
        if bounds is None:
            return None
        key = tuple(sorted(labels.items()))
        series = self._histograms[name].get(key)
        if series is None:
            series = self._histograms[name][key] = ([0] * (len(bounds) + 1), [0.0])
        return series

    def histogramCount(self, name: str, **labels: str) -> int:
        """
        Return how many values histogram C{name} recorded with C{labels}.
        """
        series = self._histograms.get(name, {}).get(tuple(sorted(labels.items())))
        return sum(series[0]) if series is not None else 0

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
        for name, (label, family) in sorted(self._labeledGauges.items()):
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} gauge")
            for value, number in sorted(family().items()):
                lines.append(f"{name}{_labels(((label, value),))} {_number(number)}")
        for name, series in sorted(self._histograms.items()):
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} histogram")
            bounds = [*(_number(b) for b in self._buckets[name]), "+Inf"]
            for labels, (counts, total) in sorted(series.items()):
                cumulative = 0
                for bound, count in zip(bounds, counts, strict=True):
                    cumulative += count
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {cumulative}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(total[0])}")
                lines.append(f"{name}_count{_labels(labels)} {cumulative}")
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
