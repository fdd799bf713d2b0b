"""
The counters and gauges the SIP layers report to: an interface the SIP
package owns, provided by the operations registry
(L{sipxmpp.ops.metrics.Metrics}) that C{tap.py} hands in.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import Interface


class IMetrics(Interface):
    """
    Where SIP code counts what it did (malformed input, refusals, sends).
    """

    def describe(name: str, text: str) -> None:
        """
        Set the help text of metric C{name}.
        """

    def increment(name: str, amount: float = 1, **labels: str) -> None:
        """
        Add C{amount} to counter C{name} with the given labels.
        """

    def gauge(name: str, sample: Callable[[], float], text: str = "") -> None:
        """
        Register a gauge read from C{sample()} when the metrics are shown.
        """
