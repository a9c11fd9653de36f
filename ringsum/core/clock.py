"""Time in integer microseconds: the wall clock, and the window's clock that never steps back.

The window takes its time from a ``WindowClock``: epoch µs (so ticks line up with
snapshots, series and Redis), but read as the wall clock's time plus how far it has been
stepped back, so an NTP step backward neither lets values count past their window nor
makes two keys fed the same values disagree. Both clocks are read through ``time`` at
call time, so freezegun (or a ``tests.helpers.ManualClock``) steers them in tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], int]  # epoch µs

# A wall clock that moves this much more or less than the monotonic clock between two
# readings was stepped (NTP steps only past 128 ms; chrony at most at boot). Smaller
# jitter (a thread preempted between the two reads) never moves the window's clock back
# either: a reading is never below the one before.
STEP_US = 100_000


def now_us() -> int:
    """The wall clock (epoch µs): what the window's clock starts from."""
    # time.time() is whole seconds plus microseconds as a float: rounding recovers
    # the exact microsecond (epoch µs stay far below 2**53).
    return round(time.time() * 1_000_000)


def monotonic_us() -> int:
    """The monotonic clock, as freezegun steers it (with the wall clock)."""
    return time.monotonic_ns() // 1000


def unsteered_monotonic_us() -> int:
    """The monotonic clock that no test freezes: the partner of a clock read elsewhere
    (the Redis server's TIME), which freezegun does not freeze either."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class WindowClock:
    """The window's time (epoch µs): the wall clock plus a ``lead`` it gained when the
    wall clock stepped back, never below any reading before it nor below ``floor``.

    - **backward step**: not followed. The lead grows by the step, so the window goes on
      at the monotonic clock's pace: each value counts for exactly one window of real
      time, and every key ages out alike.
    - **forward step**: followed at once (values age out as the window says: the wall
      clock is the only reference for what time it is); it first uses up any lead, so a
      wall clock stepped back and then put right leaves the window as if nothing happened.
    - **restart**: a new clock starts at the wall clock with no lead, raised to the
      newest time the data dir holds (``raise_floor``), so it never goes below what a
      previous run recorded; from there it goes on at the monotonic clock's pace.

    ``monotonic`` None (a test's frozen clock without a monotonic partner): the test's
    clock is read as it is, steps back included, never below ``floor``: with nothing to
    tell a step from, holding a reading would keep one the test made before it froze
    time (a sweeper thread's, at the real time) and stop its frozen window.
    """

    def __init__(self, wall: Clock = now_us, monotonic: Clock | None = monotonic_us, floor: int = 0) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.lead_us = 0  # how far the window's clock runs ahead of the wall clock
        self.steps = 0  # wall-clock steps seen, either way
        self._last = floor  # the newest reading: none below it is given
        self._floor = floor  # what a data dir holds: no reading below it, even a test's
        # Both clocks as last read, in one tuple (so no thread sees one without the
        # other); no wall time before the first reading, which starts the clock (a test
        # may freeze time between building a storage and using it).
        self._read: tuple[int | None, int] = (None, 0)

    @classmethod
    def of(cls, clock: Clock | None) -> WindowClock:
        """``clock`` as a window clock: itself if it is one, else wrapped (a test's clock
        gives its ``monotonic`` method too, when it has one); the wall clock for None."""
        if isinstance(clock, WindowClock):
            return clock
        if clock is None:
            return cls()
        return cls(clock, getattr(clock, "monotonic", None))

    def __call__(self) -> int:
        # No lock unless the wall clock stepped: every request reads this clock. Two
        # threads reading at once may each get the other's time give or take jitter;
        # nobody ever gets one below what the clocks said before they asked.
        wall = self._wall()
        if self._monotonic is None:
            return max(wall, self._floor)
        monotonic = self._monotonic()
        last_wall, last_monotonic = self._read
        if last_wall is None or abs(wall - last_wall - (monotonic - last_monotonic)) >= STEP_US:
            return self._stepped(wall, monotonic)
        self._read = (wall, monotonic)
        reading = wall + self.lead_us
        if reading <= self._last:
            return self._last
        self._last = reading
        return reading

    def _stepped(self, wall: int, monotonic: int) -> int:
        """The first reading, or the wall clock stepped since the last one: a step back is
        kept as lead, a step forward uses it up. One thread at a time, against the
        newest reading (another thread may have seen the step already)."""
        with self._lock:
            last_wall, last_monotonic = self._read
            if last_wall is not None:
                drift = wall - last_wall - (monotonic - last_monotonic)
                if abs(drift) >= STEP_US:
                    self.lead_us = max(0, self.lead_us - drift)
                    self.steps += 1
            self._read = (wall, monotonic)
            self._last = max(self._last, wall + self.lead_us)
            return self._last

    def raise_floor(self, floor_us: int) -> None:
        """Read ``floor_us`` at least from now on (the newest time a data dir holds),
        going on from there at the monotonic clock's pace if the wall clock is behind it."""
        with self._lock:
            wall = self._wall()
            if self._monotonic is not None:
                self.lead_us = max(self.lead_us, floor_us - wall)
            self._last = max(self._last, floor_us)
            self._floor = max(self._floor, floor_us)

    @property
    def ahead(self) -> bool:
        """Whether the window's clock runs ahead of the wall clock (so what it read is
        not what the wall clock will read at a restart)."""
        last_wall = self._read[0]
        return last_wall is not None and self._last > last_wall
