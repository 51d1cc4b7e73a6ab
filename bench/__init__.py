"""Benchmarks of lstmkern (run ``python -m bench.bench_kernels --help``)."""
