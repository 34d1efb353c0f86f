"""What is learnt here is what diffusers does: each fix against its diffusers setting.

Skipped without diffusers (`pip install -e ".[diffusers]"`), except in CI (`CI` set), which installs
it. The mapping, and where the two differ on purpose, is in docs/diffusers.md.
"""
import os

import pytest
import torch

from diffusion import (NULL_CLASS, SCHEDULES, SPACINGS, Guidance, SamplingSettings, apply_cfg, convert_prediction,
                       get_timesteps, make_schedule, sample_in_batches)
from models import UNet, unet_config
from tests.conftest import ddim_step
from tests.test_guidance import LabelModel, guided_v

if os.environ.get("CI"):
    import diffusers  # .ci/run installs it: in CI the oracle tests run, or fail, and never skip
else:
    diffusers = pytest.importorskip("diffusers")
from diffusers.guiders.guider_utils import rescale_noise_cfg  # noqa: E402

BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
PREDICTION_TYPE = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
# diffusers' defaults for linear are DDPM's; scaled_linear is Stable Diffusion's.
BETA_RANGE = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": (1e-4, 0.02)}


def ddim_scheduler(schedule: str = "scaled_linear", zero_snr: bool = True, **config) -> "diffusers.DDIMScheduler":
    beta_start, beta_end = BETA_RANGE[schedule]
    return diffusers.DDIMScheduler(num_train_timesteps=1000, beta_start=beta_start, beta_end=beta_end,
                                   beta_schedule=BETA_SCHEDULE[schedule], rescale_betas_zero_snr=zero_snr,
                                   clip_sample=False, set_alpha_to_one=True, **config)


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_betas_equal_diffusers_with_and_without_rescale_betas_zero_snr(schedule, zero_snr):
    theirs = ddim_scheduler(schedule, zero_snr).betas.double()
    ours = make_schedule(schedule, zero_snr=zero_snr).betas
    # diffusers computes in float32: ratios of the tiny ᾱ near T round to about 1e-5.
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=5e-5)
    assert (ours[-1] == 1) == zero_snr


@pytest.mark.parametrize("steps", [1, 3, 7, 10, 25, 50, 999])  # 3, 7 and 999 do not divide T = 1000
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_equal_diffusers_for_every_spacing(spacing, steps):
    offset = 1 if spacing == "leading" else 0  # Stable Diffusion's steps_offset
    scheduler = ddim_scheduler(timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(steps)
    assert get_timesteps(1000, steps, spacing, offset).tolist() == scheduler.timesteps.tolist()


@pytest.mark.parametrize("prediction", PREDICTION_TYPE)
def test_one_ddim_step_equals_diffusers_for_each_prediction_type(prediction):
    zero_snr = prediction != "eps"  # ε cannot start at zero SNR (see the next test)
    scheduler = ddim_scheduler(zero_snr=zero_snr, prediction_type=PREDICTION_TYPE[prediction], timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    alpha_bar = make_schedule("scaled_linear", zero_snr=zero_snr).alpha_bar.float()
    generator = torch.Generator().manual_seed(0)
    x_t, output = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    for t in (999, 499, 99):  # the first step (ᾱ = 0 at zero SNR), a middle one, the last (to ᾱ = 1)
        prev = t - 100
        ours = ddim_step(x_t, output, alpha_bar[t], alpha_bar[prev] if prev >= 0 else 1.0, prediction)
        theirs = scheduler.step(output, t, x_t, eta=0.0).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_diffusers_epsilon_at_zero_snr_is_not_finite_where_ours_refuses():
    scheduler = ddim_scheduler(zero_snr=True, prediction_type="epsilon", timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x_t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert not torch.isfinite(scheduler.step(torch.zeros_like(x_t), 999, x_t).prev_sample).all()
    with pytest.raises(ValueError, match="epsilon-prediction"):
        ddim_step(x_t, torch.zeros_like(x_t), 0.0, 0.1, "eps")


@pytest.mark.parametrize("rescale", [0.0, 0.5, 0.7, 1.0])
def test_guidance_equals_diffusers_guidance_rescale(rescale):
    generator = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(4, 3, 8, 8, generator=generator), torch.randn(4, 3, 8, 8, generator=generator)
    weight = 7.5
    theirs = rescale_noise_cfg(neg + weight * (pos - neg), pos, guidance_rescale=rescale)
    torch.testing.assert_close(apply_cfg(pos, neg, weight, rescale), theirs)


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_rescaled_guidance_of_any_network_is_diffusers_rescale_noise_cfg_applied_to_v(prediction):
    alpha_bar, labels = torch.tensor(0.4), torch.tensor([0, 2])
    model = LabelModel()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    ours = guided_v(model, x, labels, 7.5, 0.7, alpha_bar, prediction)
    cond, uncond = (convert_prediction(x, model(x, None, c), alpha_bar, prediction, "v") for c in (labels, -torch.ones_like(labels)))
    theirs = rescale_noise_cfg(uncond + 7.5 * (cond - uncond), cond, guidance_rescale=0.7)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def random_class_unet() -> UNet:
    """A tiny class-conditional UNet with seeded random weights everywhere (its output conv starts at zero,
    which would make every prediction 0): N(0, 0.1²), and N(0, 1) for the class embedding, so that the
    class, and with it guidance, changes the prediction."""
    model = UNet(unet_config("tiny", 16, num_classes=4)).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
        model.class_emb.weight.mul_(10)
    return model


def test_sampling_with_all_four_fixes_equals_diffusers_ddim_driving_the_same_unet():
    # The paper's recipe end to end: zero-SNR betas, v-prediction, trailing DDIM (η = 0) and CFG (w = 3)
    # rescaled with φ = 0.7, as a diffusers pipeline runs it, against what sample.py calls.
    model, labels, steps = random_class_unet(), torch.tensor([0, 1, 2, 3]), 5
    x_T = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    scheduler = ddim_scheduler(prediction_type="v_prediction", timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    x = x_T
    with torch.no_grad():
        for t in scheduler.timesteps:
            t_batch = torch.full((len(x),), int(t))
            cond, uncond = model(x, t_batch, labels), model(x, t_batch, torch.full_like(labels, NULL_CLASS))
            v = rescale_noise_cfg(uncond + 3.0 * (cond - uncond), cond, guidance_rescale=0.7)
            x = scheduler.step(v, t, x, eta=0.0).prev_sample
    settings = SamplingSettings(get_timesteps(1000, steps, "trailing"), guidance=Guidance(3.0, 0.7))
    ours = sample_in_batches(model, (4, 3, 16, 16), make_schedule("scaled_linear", zero_snr=True), "v", settings,
                             labels=labels, x_T=x_T)
    torch.testing.assert_close(ours, x.clamp(-1, 1), atol=1e-4, rtol=0)  # our samples end clamped to [−1, 1]
