"""What every layer may use and that uses no other: the rolling window, durations and
sizes, the clock, an answer's wait for the disk, a child process's tie to its parent."""
