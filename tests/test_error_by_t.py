import pytest
import torch

from experiments.error_by_t import TIMESTEPS, error_by_t, noise_left


def test_the_diagnostic_measures_the_last_two_timesteps_of_the_default_sampler_with_every_band(tiny_run):
    rows = error_by_t(str(tiny_run / "checkpoint.pt"), num_images=8, sample_steps=50)
    assert [r["t"] for r in rows] == sorted({*TIMESTEPS, 19, 39})
    assert all(len(r["bands"]) == 8 for r in rows)


def test_noise_left_is_the_share_of_the_noise_that_the_error_carries():
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    own = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    own = own - (own * noise).sum() / noise.square().sum() * noise  # the network's own error: orthogonal to the noise
    assert noise_left(noise, noise) == pytest.approx(1)  # x̂0 = x0 + the noise: nothing removed
    assert noise_left(0.3 * noise + own, noise) == pytest.approx(0.3, abs=1e-5)
    assert noise_left(own, noise) == pytest.approx(0, abs=1e-5)

