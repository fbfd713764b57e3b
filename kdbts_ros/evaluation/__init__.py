"""Layer 5: evaluation (metrics, protocols, real-data depth and occupancy, priors)."""
