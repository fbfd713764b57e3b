"""Layer 7: benchmarks (stage latency, the official forward pass beside ours, soak)."""
