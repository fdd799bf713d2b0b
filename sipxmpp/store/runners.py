"""
How blocking database calls are kept off the reactor thread.

A L{Runner} takes a function that blocks and returns a L{Deferred} of its
result. The gateway uses L{threadPoolRunner} (a thread pool of its own, so
a slow database never starves the reactor's default pool used by DNS);
tests and the admin command use L{synchronousRunner}, whose Deferreds have
already fired when returned, which makes tests deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Runner(Protocol):
    """
    Runs a blocking function somewhere and reports its result.
    """

    def __call__(self, function: Callable[[], T]) -> Deferred[T]: ...


def synchronousRunner(function: Callable[[], T]) -> Deferred[T]:
    """
    Run C{function} now, in the calling thread (tests, command-line tools).
    """
    try:
        return succeed(function())
    except BaseException:
        return fail()


class ThreadPoolRunner:
    """
    Run functions in C{pool}, reporting results through C{reactor}.
    """

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool) -> None:
        self.reactor = reactor
        self.pool = pool

    def __call__(self, function: Callable[[], T]) -> Deferred[T]:
        result: Deferred[T] = deferToThreadPool(self.reactor, self.pool, function)
        return result


def threadPoolRunner(reactor: IReactorFromThreads, pool: ThreadPool) -> ThreadPoolRunner:
    """
    Return a L{Runner} that uses C{pool}; the caller starts and stops it.
    """
    return ThreadPoolRunner(reactor, pool)
