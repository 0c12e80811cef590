"""Training: one loop for every model, checkpoints, GPU assignment."""
