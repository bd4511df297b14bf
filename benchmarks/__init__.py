"""The benchmark scripts (run from the repository root: `python benchmarks/<name>.py`); not part of the library."""
