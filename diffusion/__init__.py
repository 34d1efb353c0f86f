"""Zero terminal SNR diffusion (Lin et al., WACV 2024): the method, one idea per module.

- schedules:        betas, ᾱ_t, and fix #1 `enforce_zero_terminal_snr`
- parameterization: ε / v / x0 targets and conversions, the loss (fix #2: v-prediction)
- timesteps:        leading / linspace / trailing spacing (fix #3: trailing)
- samplers:         one loop per sampler (DDIM, DPM-Solver++(2M)) over a denoiser (x_t, t) ↦ (x̂0, ε̂),
                    classifier-free guidance with rescale (fix #4) wrapped into that denoiser
- ideal:            the ideal denoiser of a finite dataset (its posterior mean, in closed form)
- flow:             rectified flow (SD3), the other road to zero terminal SNR, as a VP path the samplers run on
"""
from .flow import FLOW_TIMES, FlowAsV, flow_loss, flow_schedule, flow_time, flow_velocity_target
from .ideal import IdealDenoiser
from .parameterization import (PREDICTION_TYPES, check_defined, check_pairing, convert_prediction, diffusion_loss,
                               predict_x0_eps, prediction_target, v_target)
from .samplers import (NULL_CLASS, SAMPLERS, Denoiser, Guidance, SamplingSettings, apply_cfg, ddim_update, dpmpp_2m_step,
                       guided_denoiser, initial_noise, sample, sample_ddim, sample_dpmpp_2m, sample_in_batches)
from .schedules import SCHEDULES, Schedule, enforce_zero_terminal_snr, make_betas, make_schedule
from .timesteps import SPACINGS, get_timesteps, spacing_offset

__all__ = ["Denoiser", "FLOW_TIMES", "FlowAsV", "Guidance", "IdealDenoiser", "NULL_CLASS", "PREDICTION_TYPES",
           "SAMPLERS", "SCHEDULES", "SPACINGS", "SamplingSettings", "Schedule", "apply_cfg", "check_defined",
           "check_pairing", "convert_prediction", "ddim_update", "diffusion_loss", "dpmpp_2m_step",
           "enforce_zero_terminal_snr", "flow_loss", "flow_schedule", "flow_time", "flow_velocity_target",
           "get_timesteps", "guided_denoiser", "initial_noise", "make_betas", "make_schedule", "predict_x0_eps",
           "prediction_target", "sample", "sample_ddim", "sample_dpmpp_2m", "sample_in_batches", "spacing_offset",
           "v_target"]
