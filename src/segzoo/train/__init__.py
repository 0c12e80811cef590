"""Training: one loop for every model, its loss, validation and several processes per job (DDP)."""
