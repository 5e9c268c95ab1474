# Benchmarks (issue 8). Tests and lint: scripts/test.
.PHONY: bench bench-quick

# Everything, about 5 minutes on 2 cores; writes bench/results.md.
bench:
	.venv/bin/python bench/run_all.py

# Smaller sizes, well under a minute; writes bench/results-quick.md.
bench-quick:
	.venv/bin/python bench/run_all.py --quick
