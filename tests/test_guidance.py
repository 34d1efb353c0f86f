import pytest
import torch

from diffusion import Guidance, Schedule, apply_cfg, convert_prediction, guided_denoiser, v_target


def _pair():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(4, 3, 8, 8, generator=g) * torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1, 1)
    neg = torch.randn(4, 3, 8, 8, generator=g)
    return pos, neg


def test_rescale_zero_is_plain_cfg():
    pos, neg = _pair()
    torch.testing.assert_close(apply_cfg(pos, neg, 7.5, rescale=0.0), neg + 7.5 * (pos - neg))


def test_rescale_one_gives_each_sample_exactly_the_conditional_std():
    pos, neg = _pair()
    out = apply_cfg(pos, neg, 7.5, rescale=1.0)
    torch.testing.assert_close(out.flatten(1).std(1), pos.flatten(1).std(1))


def test_rescale_interpolates_the_factor_not_the_output_std():
    pos, neg = _pair()
    cfg = neg + 5 * (pos - neg)
    factor = pos.flatten(1).std(1) / cfg.flatten(1).std(1)
    expected = cfg * (0.7 * factor + 0.3).view(4, 1, 1, 1)
    torch.testing.assert_close(apply_cfg(pos, neg, 5, rescale=0.7), expected)


def test_rescale_uses_per_sample_std_not_one_batch_std():
    pos, neg = _pair()
    out = apply_cfg(pos, neg, 7.5, rescale=1.0)
    whole_batch = (neg + 7.5 * (pos - neg)) * pos.std() / (neg + 7.5 * (pos - neg)).std()
    assert not torch.allclose(out, whole_batch)


def test_weight_one_returns_the_conditional_prediction():
    pos, neg = _pair()
    torch.testing.assert_close(apply_cfg(pos, neg, 1.0, rescale=0.7), pos)


@pytest.mark.parametrize("rescale", [-0.1, 1.5])
def test_rescale_outside_zero_one_is_refused(rescale):
    pos, neg = _pair()
    with pytest.raises(ValueError, match="rescale"):
        apply_cfg(pos, neg, 7.5, rescale=rescale)


class LabelModel(torch.nn.Module):
    """An output that depends on x_t and, through a per-class scale and offset, on the label
    (the null class −1 has its own): enough for guidance to have something to push on."""

    def __init__(self, num_classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scale = torch.rand(num_classes + 1, 3, 1, 1, generator=g) + 0.5
        self.offset = torch.randn(num_classes + 1, 3, 4, 4, generator=g)

    def forward(self, x, t, labels):
        return x * self.scale[labels] + self.offset[labels]  # labels == -1 picks the last row


class Converted(torch.nn.Module):
    """`model`'s predictions re-expressed in another parameterisation: the same denoiser."""

    def __init__(self, model, alpha_bar, source, target):
        super().__init__()
        self.model, self.alpha_bar, self.source, self.target = model, alpha_bar, source, target

    def forward(self, x, t, labels):
        return convert_prediction(x, self.model(x, t, labels), self.alpha_bar, self.source, self.target)


def one_level_schedule(alpha_bar: torch.Tensor) -> Schedule:
    """A schedule whose timestep 0 has the noise level ᾱ = `alpha_bar`."""
    return Schedule(torch.tensor([1 - alpha_bar.item(), 0.5], dtype=torch.float64))


def guided_v(model, x, labels, weight, rescale, alpha_bar, prediction):
    """The guided denoiser's answer at x, ᾱ, as v = √ᾱ·ε̂ − √(1−ᾱ)·x̂0."""
    denoise = guided_denoiser(model, one_level_schedule(alpha_bar), prediction, labels, Guidance(weight, rescale))
    return v_target(*denoise(x, 0), alpha_bar)


def _guide(model, prediction, alpha_bar, weight=7.5, rescale=0.7):
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    return x, guided_v(model, x, torch.tensor([0, 2]), weight, rescale, alpha_bar, prediction)


def test_guidance_pushes_from_the_unconditional_branch_toward_the_conditional_one():
    class Constant(torch.nn.Module):  # 2 for any class, -1 for the null class
        def forward(self, x, t, labels):
            return torch.where(labels.view(-1, 1, 1, 1) == -1, -1.0, 2.0).expand_as(x)

    _, out = _guide(Constant(), "v", torch.tensor(0.5), weight=3.0, rescale=0.0)
    torch.testing.assert_close(out, torch.full_like(out, -1 + 3 * (2 - (-1))))  # swapped branches would give -7


@pytest.mark.parametrize("prediction", ["x0", "eps"])
@pytest.mark.parametrize("ab", [0.3, 0.7, 0.99])
def test_rescaled_guidance_gives_the_same_denoiser_whatever_the_network_predicts(prediction, ab):
    alpha_bar = torch.tensor(ab)
    v_model = LabelModel()
    x, v_out = _guide(v_model, "v", alpha_bar)
    _, out = _guide(Converted(v_model, alpha_bar, "v", prediction), prediction, alpha_bar)
    torch.testing.assert_close(out, v_out, atol=1e-5, rtol=1e-5)


def test_rescaling_an_x0_prediction_in_its_own_space_would_give_another_image():
    alpha_bar, x0_model = torch.tensor(0.5), LabelModel()
    x, v = _guide(x0_model, "x0", alpha_bar)
    out = convert_prediction(x, v, alpha_bar, "v", "x0")
    labels = torch.tensor([0, 2])
    in_x0_space = apply_cfg(x0_model(x, None, labels), x0_model(x, None, torch.full_like(labels, -1)), 7.5, 0.7)
    assert (out - in_x0_space).abs().mean() > 0.05


def test_a_guidance_interval_guides_inside_it_and_draws_the_conditional_prediction_outside():
    model, labels = LabelModel(), torch.tensor([0, 2])
    schedule = Schedule(torch.linspace(0.1, 0.9, 10, dtype=torch.float64))
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    everywhere = guided_denoiser(model, schedule, "v", labels, Guidance(3.0, 0.7))
    limited = guided_denoiser(model, schedule, "v", labels, Guidance(3.0, 0.7, interval=(2, 6)))
    conditional = guided_denoiser(model, schedule, "v", labels, Guidance(1.0, 0.7))
    for t in (2, 4, 6):  # inside, ends included
        torch.testing.assert_close(limited(x, t), everywhere(x, t))
        assert not torch.allclose(limited(x, t)[0], conditional(x, t)[0])
    for t in (0, 1, 7, 9):
        torch.testing.assert_close(limited(x, t), conditional(x, t))
    assert not torch.allclose(everywhere(x, 9)[0], conditional(x, 9)[0])  # guidance would change the answer there
