"""pytest-benchmark suite (run by `make bench`, not `make test`)."""
