"""When the cycle collector runs, and over what: the serving process's GC policy.

A full CPython collection walks every tracked object and holds the GIL throughout:
with 100,000 keys it took 70-84 ms, a stall for every request in flight. What this
service keeps for long (keys, their sums, the framework) forms no reference cycles,
and frozen objects are still freed by reference counting when a key ages out. So once
a second the young generations are collected (short-lived cycles die there) and the
survivors are frozen (``gc.freeze()`` is O(1)): later passes walk only what was
allocated since, whatever the number of keys.

The price: a cycle alive at a freeze that turns into garbage later is not collected
while frozen. Once an hour everything is unfrozen and collected in one full pass,
which bounds that leak to an hour's worth; that pass is the one long pause left.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

FREEZE_INTERVAL_S = 1.0
RECLAIM_INTERVAL_S = 3600.0

_thread: threading.Thread | None = None
_stopping = threading.Event()


def freeze_survivors() -> None:
    """Collect the young generations, then take everything left out of later passes."""
    gc.collect(1)
    gc.freeze()


def reclaim() -> None:
    """One full pass over everything, frozen or not, then freeze the survivors again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def start() -> None:
    """Run the policy in a daemon thread of this process (a no-op when it already runs).

    Call once in each serving process, after start-up (imports, app, storage restored)
    and before serving; a forked child must call it again, threads do not survive a fork.
    """
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stopping.clear()
    freeze_survivors()
    _thread = threading.Thread(target=_freeze_forever, name="ringsum-gc", daemon=True)
    _thread.start()


def stop() -> None:
    """Stop the policy's thread (what is frozen stays frozen)."""
    _stopping.set()
    if _thread is not None:
        _thread.join()


def _freeze_forever() -> None:
    reclaimed = time.monotonic()
    while not _stopping.wait(FREEZE_INTERVAL_S):
        try:
            if time.monotonic() - reclaimed >= RECLAIM_INTERVAL_S:
                reclaim()
                reclaimed = time.monotonic()
            else:
                freeze_survivors()
        except Exception:  # the policy must never kill the thread that keeps it
            log.exception("garbage-collector policy failed")
