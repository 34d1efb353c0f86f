import pytest
import torch

from diffusion import PREDICTION_TYPES, diffusion_loss, make_schedule, predict_x0_eps, prediction_target, v_target

# eps is undefined at alpha_bar = 0 and x0-prediction's noise at alpha_bar = 1: both refusals are tested below.
DEFINED = [(p, ab) for p in PREDICTION_TYPES for ab in (0.0, 0.3, 0.9, 1.0) if (p, ab) not in {("eps", 0.0), ("x0", 1.0)}]


@pytest.mark.parametrize("prediction_type, alpha_bar", DEFINED)
def test_true_target_converts_back_to_the_true_x0_and_noise(prediction_type, alpha_bar):
    x0, noise = torch.randn(3, 3, 4, 4, dtype=torch.float64), torch.randn(3, 3, 4, 4, dtype=torch.float64)
    ab = torch.full((3, 1, 1, 1), alpha_bar, dtype=torch.float64)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    x0_hat, eps_hat = predict_x0_eps(x_t, prediction_target(x0, noise, ab, prediction_type), ab, prediction_type)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, noise)


def test_v_target_at_zero_snr_is_minus_x0():
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(v_target(x0, noise, torch.zeros(2, 1, 1, 1)), -x0)


def test_v_target_at_no_noise_is_the_noise():
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(v_target(x0, noise, torch.ones(2, 1, 1, 1)), noise)


def test_v_prediction_at_zero_snr_reads_x0_as_minus_v():
    x_t, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    x0_hat, eps_hat = predict_x0_eps(x_t, v, torch.zeros(2, 1, 1, 1), "v")
    torch.testing.assert_close(x0_hat, -v)
    torch.testing.assert_close(eps_hat, x_t)


def test_eps_prediction_at_zero_snr_raises_instead_of_returning_inf():
    x_t = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="epsilon-prediction"):
        predict_x0_eps(x_t, x_t, torch.zeros(2, 1, 1, 1), "eps")


def test_x0_prediction_without_noise_raises_for_the_undefined_noise():
    x_t = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="x0-prediction"):
        predict_x0_eps(x_t, x_t, torch.ones(2, 1, 1, 1), "x0")


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="unknown prediction type"):
        prediction_target(torch.zeros(1), torch.zeros(1), torch.zeros(1), "score")


class _Oracle(torch.nn.Module):
    """Knows x0; returns the exact target, written out from x_t and x0 by hand (not with
    `prediction_target`, which the loss itself uses)."""

    def __init__(self, x0, schedule, prediction_type):
        super().__init__()
        self.x0, self.schedule, self.prediction_type = x0, schedule, prediction_type

    def forward(self, x_t, t, labels):
        ab = self.schedule.alpha_bar[t].view(-1, 1, 1, 1).to(x_t)
        return hand_target(x_t, self.x0, ab, self.prediction_type)


def hand_target(x_t, x0, ab, prediction_type):
    """From x_t = √ᾱ x0 + √(1−ᾱ) ε: ε = (x_t − √ᾱ x0)/√(1−ᾱ) and v = √ᾱ ε − √(1−ᾱ) x0 = (√ᾱ x_t − x0)/√(1−ᾱ)."""
    if prediction_type == "x0":
        return x0
    if prediction_type == "eps":
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    return (ab.sqrt() * x_t - x0) / (1 - ab).sqrt()


@pytest.mark.parametrize("prediction_type", ["v", "x0"])
def test_loss_of_a_perfect_model_is_zero_even_at_zero_snr(prediction_type):
    schedule = make_schedule("scaled_linear", zero_snr=True)
    x0 = torch.randn(64, 3, 4, 4, dtype=torch.float64)
    loss = diffusion_loss(_Oracle(x0, schedule, prediction_type), x0, schedule, prediction_type)
    assert loss.item() < 1e-10


def test_offset_noise_shifts_the_noise_per_sample_and_channel():
    schedule = make_schedule("scaled_linear", zero_snr=True)
    seen = []
    x0 = torch.zeros(256, 3, 8, 8)

    def record(x_t, t, labels):
        seen.append(x_t / schedule.alpha_bar_at(t, x_t).sub(1).neg().sqrt())
        return torch.zeros_like(x_t)

    torch.manual_seed(0)
    diffusion_loss(record, x0, schedule, "eps", offset_noise=0.5)
    channel_means = seen[0].mean((2, 3))  # the noise's mean per (sample, channel)
    assert channel_means.std().item() == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("prediction_type", ["eps", "v", "x0"])
def test_loss_equals_the_mean_squared_error_to_the_target_computed_by_hand(prediction_type):
    schedule = make_schedule("scaled_linear", zero_snr=prediction_type != "eps")
    x0 = torch.randn(16, 3, 4, 4, dtype=torch.float64)
    seen = []

    def model(x_t, t, labels):
        seen.append((x_t, t))
        return 0.5 * x_t

    loss = diffusion_loss(model, x0, schedule, prediction_type)
    x_t, t = seen[0]
    target = hand_target(x_t, x0, schedule.alpha_bar[t].view(-1, 1, 1, 1), prediction_type)
    assert loss.item() == pytest.approx((0.5 * x_t - target).square().mean().item(), rel=1e-6)


def test_loss_draws_every_timestep_including_the_last_one_t_minus_1():
    # T = 10 and 2000 draws: a timestep the loss never draws is missed with probability 0.9^2000 ≈ 1e-92.
    schedule, seen = make_schedule("cosine", num_train_steps=10, zero_snr=True), []

    def record(x_t, t, labels):
        seen.append(t)
        return torch.zeros_like(x_t)

    torch.manual_seed(0)
    diffusion_loss(record, torch.zeros(2000, 1, 1, 1), schedule, "v")
    assert sorted(set(seen[0].tolist())) == list(range(10))


def test_the_loss_draws_t_uniformly_then_the_noise_from_the_global_rng():
    # The order a resumed run replays: t ~ U{0, …, T−1} for the batch, then ε ~ N(0, I).
    schedule, seen = make_schedule("scaled_linear", zero_snr=True), []

    def record(x_t, t, labels):
        seen.append((x_t, t))
        return torch.zeros_like(x_t)

    x0 = torch.rand(64, 1, 2, 2)
    torch.manual_seed(0)
    diffusion_loss(record, x0, schedule, "v")
    torch.manual_seed(0)
    t, noise = torch.randint(0, 1000, (64,)), torch.randn(64, 1, 2, 2)
    assert torch.equal(seen[0][1], t)
    torch.testing.assert_close(seen[0][0], schedule.add_noise(x0, noise, t), atol=0, rtol=0)
