"""Loaded by the server processes of the keys-at-scale benchmark (through PYTHONPATH):
logs every garbage-collector pass over 1 ms to $RINGSUM_BENCH_GC_LOG, so request
latency spikes can be told apart from the sweep's."""

import gc
import os
import time

_LOG = os.environ.get("RINGSUM_BENCH_GC_LOG")
_started = [0.0]


def _time_collections(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    milliseconds = (time.perf_counter() - _started[0]) * 1000
    if milliseconds > 1:
        with open(_LOG, "a") as log:  # type: ignore[arg-type]
            log.write(f"{info['generation']} {milliseconds:.3f}\n")


if _LOG:
    gc.callbacks.append(_time_collections)
