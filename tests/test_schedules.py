import pytest
import torch

from diffusion import SCHEDULES, Schedule, enforce_zero_terminal_snr, make_betas, make_schedule


@pytest.mark.parametrize("name", SCHEDULES)
def test_named_schedules_are_float64_with_betas_in_zero_one(name):
    betas = make_betas(name, 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert (betas > 0).all() and (betas < 1).all()


def test_scaled_linear_terminal_values_match_paper_table_1():
    schedule = make_schedule("scaled_linear")
    assert schedule.sqrt_alpha_bar[-1].item() == pytest.approx(0.068265, abs=1e-6)
    assert schedule.snr[-1].item() == pytest.approx(0.004682, abs=1e-6)


def test_linear_terminal_values_match_paper_table_1():
    schedule = make_schedule("linear")
    assert schedule.sqrt_alpha_bar[-1].item() == pytest.approx(0.006353, abs=1e-6)
    assert schedule.snr[-1].item() == pytest.approx(0.000040, abs=1e-6)


def test_cosine_betas_are_clipped_at_0_999():
    assert make_betas("cosine", 1000).max().item() == pytest.approx(0.999)


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_snr_keeps_first_alpha_bar_and_zeroes_the_last(name):
    before, after = Schedule(make_betas(name)), Schedule(enforce_zero_terminal_snr(make_betas(name)))
    assert after.alpha_bar[0].item() == pytest.approx(before.alpha_bar[0].item(), abs=1e-12)
    assert after.alpha_bar[-1].item() == 0.0
    assert after.snr[-1].item() == 0.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_snr_betas_lie_in_zero_one_with_the_last_exactly_one(name):
    betas = enforce_zero_terminal_snr(make_betas(name))
    assert (betas > 0).all() and (betas <= 1).all()
    assert betas[-1].item() == 1.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_zero_snr_alpha_bar_strictly_decreases(name):
    alpha_bar = Schedule(enforce_zero_terminal_snr(make_betas(name))).alpha_bar
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()


def test_zero_snr_is_a_linear_map_of_sqrt_alpha_bar():
    sqrt_before = Schedule(make_betas("scaled_linear")).sqrt_alpha_bar
    sqrt_after = Schedule(enforce_zero_terminal_snr(make_betas("scaled_linear"))).sqrt_alpha_bar
    first, last = sqrt_before[0], sqrt_before[-1]
    expected = (sqrt_before - last) * first / (first - last)
    torch.testing.assert_close(sqrt_after, expected, atol=1e-12, rtol=0)


def test_add_noise_at_zero_snr_returns_pure_noise():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    x_t = schedule.add_noise(x0, noise, torch.full((4,), 999))
    torch.testing.assert_close(x_t, noise)


def test_add_noise_mixes_signal_and_noise_by_alpha_bar():
    schedule = make_schedule("linear")
    x0, noise, t = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2), torch.tensor([0, 500])
    x_t = schedule.add_noise(x0, noise, t)
    assert x_t[1, 0, 0, 0].item() == pytest.approx(schedule.sqrt_alpha_bar[500].item(), rel=1e-6)


def test_unknown_schedule_name_is_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_betas("quadratic")


@pytest.mark.parametrize(
    "betas",
    [torch.full((2, 5), 0.1), torch.tensor([0.1, 0.0, 0.2]), torch.tensor([0.1, 1.5]), torch.tensor([0.1, float("nan")])],
    ids=["two-dimensional", "zero-beta", "beta-above-one", "nan"],
)
def test_betas_that_do_not_decrease_alpha_bar_are_refused(betas):
    with pytest.raises(ValueError, match="betas"):
        enforce_zero_terminal_snr(betas)


@pytest.mark.parametrize("name", ["linear", "scaled_linear"])
@pytest.mark.parametrize("steps", [250, 4000])
def test_linear_schedules_keep_their_total_noise_for_other_step_counts(name, steps):
    # log ᾱ_T ≈ −Σβ sets the brightness leak: it must not change with T (improved-diffusion's scaling).
    # Unscaled, T = 250 would give log ᾱ_T four times smaller in magnitude.
    reference = Schedule(make_betas(name, 1000)).alpha_bar[-1].log().item()
    assert Schedule(make_betas(name, steps)).alpha_bar[-1].log().item() == pytest.approx(reference, rel=0.03)


def test_linear_schedule_with_too_few_steps_for_its_betas_is_refused():
    with pytest.raises(ValueError, match="β ≥ 1"):
        make_betas("linear", 10)
