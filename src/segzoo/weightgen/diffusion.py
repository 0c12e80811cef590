"""The diffusion both learned generators train and sample with: MONAI's DDPM schedule (linear β, the model predicts
the clean sample) and its DDIM sampler.

The β range is DDPM's for 1,000 steps (1e-4 … 0.02) scaled by 1000 / ``diffusion_steps``, so that whatever the
number of steps the last one leaves (almost) no signal, ᾱ_T ≈ 4e-5, and sampling may start from pure noise. With
the unscaled range, 100 steps leave ᾱ_T ≈ 0.37: a sampler started from N(0, 1) then feeds the model inputs it
never saw in training (measured: G.pt's in-sample one-shot stayed at its start).
"""

from __future__ import annotations

from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

REFERENCE_STEPS, BETA_START, BETA_END = 1000, 1e-4, 0.02  # DDPM's linear schedule


def noise_schedule(diffusion_steps: int, ddim_steps: int | None = None) -> DDPMScheduler | DDIMScheduler:
    """The DDPM schedule a generator trains with, or (``ddim_steps``) the DDIM sampler over the same schedule."""
    factor = REFERENCE_STEPS / diffusion_steps
    kwargs = {"num_train_timesteps": diffusion_steps, "schedule": "linear_beta", "prediction_type": "sample",
              "clip_sample": False, "beta_start": min(BETA_START * factor, 0.5),
              "beta_end": min(BETA_END * factor, 0.999)}
    if ddim_steps is None:
        return DDPMScheduler(**kwargs)
    sampler = DDIMScheduler(**kwargs)
    sampler.set_timesteps(ddim_steps)
    return sampler
