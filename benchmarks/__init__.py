"""Speed benchmarks; each prints one JSON object per line."""
