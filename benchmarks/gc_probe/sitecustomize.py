"""Loaded by benchmark server processes (through PYTHONPATH): logs every garbage-collector
pass over 1 ms to $RINGSUM_BENCH_GC_LOG, so request latency spikes can be told apart
from the sweep's; with $RINGSUM_BENCH_GC_POLICY=off, the server runs without its GC policy
(``ringsum.serving.gc_policy``), so the benchmark can measure what the policy is worth."""

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

if os.environ.get("RINGSUM_BENCH_GC_POLICY") == "off":
    from ringsum.serving import gc_policy

    gc_policy.start = lambda: None  # the server calls it through the module
