import pytest
import torch

from models import UNet, unet_config


def _params(preset, num_classes=0):
    with torch.device("meta"):
        model = UNet(unet_config(preset, 32, num_classes))
    return sum(p.numel() for p in model.parameters())


def test_tiny_preset_has_under_0_2m_parameters():
    assert _params("tiny") < 200_000


def test_cifar10_preset_matches_ddpm_35_7m_parameters():
    assert _params("cifar10") / 1e6 == pytest.approx(35.7, abs=0.1)


@pytest.mark.parametrize("size", [16, 32, 48])
def test_output_has_the_input_shape(size):
    model = UNet(unet_config("tiny", size, 3))
    x = torch.randn(2, 3, size, size)
    assert model(x, torch.tensor([0, 999]), torch.tensor([0, 2])).shape == x.shape


def test_label_minus_one_is_the_null_class_used_when_labels_are_missing():
    model = UNet(unet_config("tiny", 16, 3))
    for p in model.parameters():  # the zero-initialised layers would hide any difference
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 500])
    torch.testing.assert_close(model(x, t, torch.tensor([-1, -1])), model(x, t, None))
    assert not torch.allclose(model(x, t, torch.tensor([0, 1])), model(x, t, None))


def test_image_size_the_unet_cannot_halve_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        unet_config("cpu", 28)  # 2x2 patches, then halved twice


def test_patches_fold_into_channels_and_back_to_the_input_shape():
    model = UNet(unet_config("cpu", 32, 4))
    assert model.conv_in.in_channels == 12 and model(torch.randn(1, 3, 32, 32), torch.tensor([3])).shape == (1, 3, 32, 32)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown model preset"):
        unet_config("huge", 32)


def test_the_input_skip_starts_at_zero_and_passes_x_t_through_its_gain():
    model = UNet(unet_config("cpu", 32, num_classes=4))
    x, t, labels = torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.tensor([0, 3])
    assert model(x, t, labels).abs().max() == 0  # zero-initialised head and gain: the model starts at 0
    with torch.no_grad():
        model.skip_gain.bias.fill_(2.0)  # g = 2 for every timestep and class; the head still answers 0
    torch.testing.assert_close(model(x, t, labels), 2 * x)


def test_the_unet_keeps_its_convolution_weights_channels_last_through_copies_and_loading():
    import copy

    model = UNet(unet_config("tiny", 16, 2))
    loaded = UNet(unet_config("tiny", 16, 2))
    loaded.load_state_dict(copy.deepcopy(model).state_dict())
    for m in (model, copy.deepcopy(model).to("cpu"), loaded):
        assert m.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_channels_last_unet_computes_what_the_same_weights_compute_in_the_usual_layout():
    torch.manual_seed(0)
    model = UNet(unet_config("cpu", 32, 4))
    for p in model.parameters():  # the zero-initialised convolutions too, so that every path counts
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(4, 3, 32, 32), torch.tensor([1, 200, 600, 999]), torch.tensor([0, 1, 2, 3])
    channels_last = model(x, t, y)
    usual = model.to(memory_format=torch.contiguous_format)(x, t, y)
    torch.testing.assert_close(channels_last, usual, rtol=1e-4, atol=1e-4)
