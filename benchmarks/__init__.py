"""GPU benchmarks of the model and the pipeline; run them as ``python -m benchmarks.<name>`` (see README.md)."""
