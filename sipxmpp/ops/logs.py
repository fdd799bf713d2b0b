"""
The log observer built from C{[log]}: level filter and text or JSON lines.

twistd consults the application's L{ILogObserver} component before its own
default, so the gateway service registers the observer built here (see
L{sipxmpp.tap.GatewayService}). twistd's C{--logfile} is honoured: the
observer writes there, or to standard output under C{-n} without a file
(under systemd: the journal).

A log file is never rotated by the gateway itself: logrotate moves it and
sends C{SIGUSR1}, and the gateway reopens the file under its name
(L{reopenOnSignal}; C{docs/operations.rst} has the logrotate snippet).
"""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile

from sipxmpp.config import LogSettings


def openLogFile(logfile: str | None) -> IO[str]:
    """
    Return the stream to log to: twistd's C{--logfile}, or stdout.
    """
    if not logfile or logfile == "-":
        return sys.stdout
    # No rotation of its own (rotateLength=None): logrotate does it.
    stream: IO[str] = LogFile.fromFullPath(logfile, rotateLength=None)
    return stream


def reopenOnSignal(stream: IO[str], callFromThread: Callable[..., object],
                   signum: int = signal.SIGUSR1) -> Callable[[], None]:  # fmt: skip
    """
    Reopen C{stream} (a log file from L{openLogFile}) when the process gets
    C{signum}, in the reactor thread (C{callFromThread}: safe to call from
    a signal handler); for logrotate, which moves the file away first.

    On standard output (the journal) the signal is ignored, so that
    C{systemctl reload} never ends the process (the default action).

    @return: a function that puts the previous handler back.
    """
    logFile = stream if isinstance(stream, LogFile) else None

    def handler(number: int, frame: object) -> None:
        if logFile is not None:
            callFromThread(logFile.reopen)

    previous = signal.signal(signum, handler)

    def restore() -> None:
        signal.signal(signum, previous)

    return restore


def makeLogObserver(settings: LogSettings, stream: IO[str]) -> ILogObserver:
    """
    Build an observer writing C{settings.format} lines at or above
    C{settings.level} to C{stream}.
    """
    if settings.format == "json":
        sink: ILogObserver = FileLogObserver(stream, formatJSONLine)
    else:
        formatTime = secondCachedTimeFormatter()
        sink = FileLogObserver(stream, lambda event: formatClassicLine(event, formatTime))
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(settings.level))
    return FilteringLogObserver(sink, [predicate])


def secondCachedTimeFormatter(
    timeFormat: str = timeFormatRFC3339,
) -> Callable[[float | None], str]:
    """
    Return L{twisted.logger.formatTime} for C{timeFormat} (whole seconds,
    as twisted's L{textFileLogObserver} writes them), remembering the last
    second formatted: a busy gateway logs many lines a second, and the
    time zone and C{strftime} work per line cost more than the rest of it.
    """
    last: list[Any] = [None, ""]

    def format(when: float | None) -> str:
        if when is None:
            return formatTime(when, timeFormat)
        second = math.floor(when)
        if second != last[0]:
            last[0] = second
            last[1] = formatTime(second, timeFormat)
        text: str = last[1]
        return text

    return format


def formatClassicLine(event: dict[str, Any], formatTime: Callable[[float | None], str]) -> str | None:
    """
    Format C{event} as L{formatEventAsClassicLogText} does (the text log's
    lines), with C{str.format_map} for the message when that gives the same
    text: a plain format string, no failure, no flattened or unformattable
    event. Twisted's own formatter (L{string.Formatter}, in Python) costs
    more than the rest of a line; anything unusual is left to it.
    """
    format = event.get("log_format")
    if (type(format) is not str or "()" in format or "log_failure" in event
            or "log_flattened" in event):  # fmt: skip
        return formatEventAsClassicLogText(event, formatTime=formatTime)
    try:
        text = format.format_map(event)
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = "{}#{}".format(event.get("log_namespace", "-"),
                                    "-" if level is None else level.name)  # fmt: skip
        else:
            system = str(system)
    except Exception:
        return formatEventAsClassicLogText(event, formatTime=formatTime)
    if not text:
        return None
    line = f"{formatTime(event.get('log_time'))} [{system}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def formatJSONLine(event: dict[str, Any]) -> str:
    """
    Format one event as a flat JSON object for log collectors: time (UTC,
    ISO 8601), level, namespace, message and, for errors, the traceback.
    """
    level = event.get("log_level")
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": level.name if level is not None else "info",
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False) + "\n"
