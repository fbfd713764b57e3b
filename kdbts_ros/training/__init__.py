"""Layer 4: training (sources, sample layouts, losses, the objective, the loop)."""
