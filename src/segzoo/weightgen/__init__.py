"""Checkpoint diffusion (G.pt): a zoo of small networks, a diffusion transformer over their weights."""
