"""G.pt (Peebles et al. 2022): the diffusion transformer over a zoo network's weight changes, its training and its
DDIM sampler."""
