"""Project flows: benchmarks, synthesis reports, evaluation."""
