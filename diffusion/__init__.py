"""Zero terminal SNR diffusion (Lin et al., WACV 2024): the method, one idea per module.

- schedules:        betas, ᾱ_t, and fix #1 `enforce_zero_terminal_snr`
- parameterization: ε / v / x0 targets and conversions, the loss (fix #2: v-prediction)
- timesteps:        leading / linspace / trailing spacing (fix #3: trailing)
- guidance:         classifier-free guidance with rescale (fix #4)
- samplers:         the DDIM and DPM-Solver++(2M) steps and the sampling loop
- ideal:            the closed-form optimal denoiser of a finite dataset
"""
from .guidance import apply_cfg
from .ideal import IdealDenoiser
from .parameterization import (
    PREDICTION_TYPES,
    diffusion_loss,
    predict_x0_eps,
    prediction_target,
    v_target,
)
from .samplers import SAMPLERS, ddim_step, dpmpp_2m_step, guided_output, sample
from .schedules import SCHEDULES, Schedule, enforce_zero_terminal_snr, make_betas, make_schedule
from .timesteps import SPACINGS, get_timesteps

__all__ = [
    "PREDICTION_TYPES",
    "SAMPLERS",
    "SCHEDULES",
    "SPACINGS",
    "IdealDenoiser",
    "Schedule",
    "apply_cfg",
    "ddim_step",
    "dpmpp_2m_step",
    "diffusion_loss",
    "enforce_zero_terminal_snr",
    "get_timesteps",
    "guided_output",
    "make_betas",
    "make_schedule",
    "predict_x0_eps",
    "prediction_target",
    "sample",
    "v_target",
]
