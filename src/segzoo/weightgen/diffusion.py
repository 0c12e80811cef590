"""The diffusion both learned generators train and sample with: MONAI's DDPM schedule (linear β, the model predicts
the clean sample) and its DDIM sampler."""

from __future__ import annotations

from monai.networks.schedulers import DDIMScheduler, DDPMScheduler


def noise_schedule(diffusion_steps: int, ddim_steps: int | None = None) -> DDPMScheduler | DDIMScheduler:
    """The DDPM schedule a generator trains with, or (``ddim_steps``) the DDIM sampler over the same schedule."""
    kwargs = {"num_train_timesteps": diffusion_steps, "schedule": "linear_beta", "prediction_type": "sample",
              "clip_sample": False}
    if ddim_steps is None:
        return DDPMScheduler(**kwargs)
    sampler = DDIMScheduler(**kwargs)
    sampler.set_timesteps(ddim_steps)
    return sampler
