"""scripts/benchmark.py's two halves: `measure` runs and times the ways, `report` summarizes
the repeated runs (medians and spreads) into a table, a section of docs/benchmarks.md and a chart."""
