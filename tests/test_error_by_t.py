import pytest
import torch

from experiments.error_by_t import TIMESTEPS, error_by_t, near_edges, noise_left


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


def test_near_edges_marks_the_pixels_within_the_radius_of_a_step_on_either_side():
    image = torch.zeros(1, 3, 16, 16)
    image[:, 1, :, 8:] = 1  # a vertical step between columns 7 and 8, in one channel
    columns = near_edges(image, radius=2)[0, 0].any(0).nonzero().flatten().tolist()
    assert columns == [5, 6, 7, 8, 9, 10]
    assert not near_edges(torch.zeros(1, 3, 16, 16)).any()


def test_the_error_near_edges_and_elsewhere_split_the_pixels_between_them(tiny_run):
    for r in error_by_t(str(tiny_run / "checkpoint.pt"), num_images=8, sample_steps=50):
        assert min(r["rms_edges"], r["rms_elsewhere"]) < r["rms"] < max(r["rms_edges"], r["rms_elsewhere"])
