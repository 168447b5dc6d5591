"""Scale benchmarks: run as modules (``python -m benchmarks.<name>``); they print, they do not assert."""
