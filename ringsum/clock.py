"""Wall-clock time in integer microseconds.

Epoch time (not monotonic) so ticks line up with snapshots and with Redis; read
through ``time.time()`` at call time so freezegun can steer it in tests.
"""

import time


def now_us() -> int:
    # time.time() is whole seconds plus microseconds as a float: rounding recovers
    # the exact microsecond (epoch µs stay far below 2**53).
    return round(time.time() * 1_000_000)
