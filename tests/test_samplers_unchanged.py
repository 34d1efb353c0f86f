"""The samplers as one loop each give the samples of the single loop they replaced, bit for bit.

`sample_as_before` is that loop as it stood before the rewrite (commit ec6a8f2), kept here only as the
reference: DDIM's step and DPM-Solver++(2M)'s chained by one `if` over a network output.
"""
import pytest
import torch

from diffusion import dpmpp_2m_step, get_timesteps, guided_denoiser, make_schedule, sample
from models import UNet, unet_config


def sample_as_before(model, shape, schedule, timesteps, prediction_type, labels, guidance, rescale, generator, eta,
                     sampler):
    x = torch.randn(shape, generator=generator)
    alpha_bars = schedule.alpha_bar[timesteps].tolist() + [1.0]
    x0_before = None
    denoise = guided_denoiser(model, schedule, prediction_type, labels, guidance, rescale)
    for i, t in enumerate(timesteps.tolist()):
        alpha_bar = torch.tensor(alpha_bars[i], dtype=x.dtype)
        x0, eps = denoise(x, t)
        if sampler == "ddim":
            noise = torch.randn(shape, generator=generator) if eta > 0 else None
            alpha_bar_prev = torch.tensor(alpha_bars[i + 1], dtype=x.dtype)
            x_prev = alpha_bar_prev.sqrt() * x0
            if eta == 0:
                x = x_prev + (1 - alpha_bar_prev).sqrt() * eps
            else:
                sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()
                x = x_prev + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise
        else:
            x = dpmpp_2m_step(x, x0, x0_before, alpha_bars[i - 1] if i else None, alpha_bars[i], alpha_bars[i + 1])
            x0_before = x0
    return x.clamp(-1, 1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = UNet(unet_config("tiny", 16, num_classes=4)).eval()
    for p in net.parameters():  # weights large enough that every branch moves the samples
        p.data.normal_(0, 0.05)
    return net


@pytest.mark.parametrize("sampler, eta", [("ddim", 0.0), ("ddim", 1.0), ("dpmpp-2m", 0.0)])
@pytest.mark.parametrize("guidance, rescale", [(1.0, 0.0), (3.0, 0.0), (3.0, 0.7)])
@pytest.mark.parametrize("zero_snr, prediction, spacing", [(True, "v", "trailing"), (True, "x0", "trailing"),
                                                          (False, "eps", "leading")])
def test_each_sampler_gives_the_samples_of_the_loop_it_replaced_bit_for_bit(model, sampler, eta, guidance, rescale,
                                                                            zero_snr, prediction, spacing):
    schedule = make_schedule("scaled_linear", zero_snr=zero_snr)
    timesteps = get_timesteps(1000, 6, spacing, int(spacing == "leading"))
    labels = torch.tensor([0, 1, 3])
    options = dict(labels=labels, guidance=guidance, rescale=rescale, eta=eta, sampler=sampler)
    new = sample(model, (3, 3, 16, 16), schedule, timesteps, prediction, generator=torch.Generator().manual_seed(1),
                 progress=False, **options)
    before = sample_as_before(model, (3, 3, 16, 16), schedule, timesteps, prediction, labels, guidance, rescale,
                              torch.Generator().manual_seed(1), eta, sampler)
    assert torch.equal(new, before)
