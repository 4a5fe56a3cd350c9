"""
One outcome handed to several callers.

Coalesced requests (restarts of one process, reloads while one is queued)
each hold a Deferred of their own and must all get the one command's
result, success or failure alike.
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

__all__ = ["fireAll"]


def fireAll(waiters: Iterable[Deferred], result):
    """
    Fire each of C{waiters} with C{result} (errback for a L{Failure}), and
    return C{result} so this can sit in a callback chain.
    """
    for waiter in waiters:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)
    return result
