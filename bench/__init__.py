"""Stockbell benchmarks: `python -m bench <scenario> [--db sqlite|postgres] [--quick]`."""
