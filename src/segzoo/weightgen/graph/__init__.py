"""The structure-shared generator: a diffusion model over a zoo network's change from its start, whose denoiser is
one small model shared across the network's neural graph (channels as nodes, kernels as edges), told about the start
by its own gradient or its first Adam steps."""
