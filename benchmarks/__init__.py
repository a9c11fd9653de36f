"""Benchmarks, kept apart from the tests: ``python -m benchmarks`` (or ``make bench``)."""
