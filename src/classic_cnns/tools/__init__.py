"""What reads finished runs: evaluate and predict, the sweep report, the benchmark."""
