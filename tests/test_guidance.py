import pytest
import torch

from diffusion import apply_cfg


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
