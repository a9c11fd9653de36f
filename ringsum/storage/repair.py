"""``python app.py --repair``: accept what a data dir lacks, say what was lost, make it whole.

Run by the server process with the data dir locked, before it serves: the data dir is
read accepting its gaps (inventory.py), then a snapshot of what is left replaces it, so
the start that follows, and every later one, finds it whole.
"""

from __future__ import annotations

import logging

from .base import StorageOptions
from .checkpoint import load, save
from .datadir import DataDir

log = logging.getLogger(__name__)


def repair(data_dir: DataDir, options: StorageOptions, now_us: int) -> bool:
    """``--repair``: read the data dir accepting what it lacks (logged), then write a
    snapshot of what is left, so it is whole again. Whether anything was accepted."""
    restored = load(data_dir, options.window_us, options.resolution_us, now_us, repair=True, accept_missing=True)
    if not restored.accepted:
        log.info("--repair: the data dir %s is whole; nothing to repair", data_dir.path)
        return False
    save(data_dir, restored.last_sequence, restored.sums, restored.markers, restored.clock_us)
    log.warning(
        "--repair: started the data dir %s without what it lacks, and the values that held are lost: %s; "
        "a new snapshot holds the %d keys that are left",
        data_dir.path,
        "; ".join(restored.accepted),
        len(restored.sums),
    )
    return True
