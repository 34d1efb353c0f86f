"""The detail's c_out: the network's own finest scale times 1/σ_t, so that it predicts x0's detail, v elsewhere."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from diffusion import make_schedule
from models import UNet, unet_config
from models.checkpoint import load_ema_model, load_training_checkpoint
from models.unet import detail
from tests.conftest import TINY, run_script, run_script_in_this_process
from train_config import TrainConfig, check_config

SCHEDULE = make_schedule("scaled_linear", 1000, zero_snr=True)
T = torch.tensor([0, 19, 500, 999])


def rebuilt(model: UNet, **changes) -> UNet:
    """The same weights in a UNet whose config differs by `changes`."""
    copy = UNet(replace(model.config, **changes), SCHEDULE.alpha_bar).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def trained_looking_unets() -> tuple[UNet, UNet]:
    """The cpu UNet with random weights everywhere (the head is no longer zero), without and with the c_out;
    neither has the input skip or the detail skip, so the first one's output is the network's own F."""
    config = replace(unet_config("cpu", 16, num_classes=4), input_skip=False)
    torch.manual_seed(0)
    plain = UNet(config, SCHEDULE.alpha_bar).eval()
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return plain, rebuilt(plain, detail_out=True)


def test_with_the_detail_skip_x0s_finest_scale_is_minus_the_networks_own():
    # x̂0 = √ᾱ·x_t − σ·v̂ and v̂ = (√ᾱ/σ)·D(x_t) + D(F)/σ + the rest, so D(x̂0) = −D(F) at every t
    plain, with_out = trained_looking_unets()
    both = rebuilt(with_out, detail_skip=True)
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    alpha_bar = SCHEDULE.alpha_bar[T].float().view(-1, 1, 1, 1)
    with torch.no_grad():
        own, v = plain(x, T, labels), both(x, T, labels)
    x0 = alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * v
    torch.testing.assert_close(detail(x0), -detail(own), rtol=1e-4, atol=1e-4)


def test_the_detail_out_gain_is_one_over_sigma():
    _, with_out = trained_looking_unets()
    assert with_out.detail_out_gain[0].item() == pytest.approx(34.3, abs=0.1)  # √(1 − ᾱ_0) = 0.029
    assert with_out.detail_out_gain[999].item() == 1.0  # zero terminal SNR: σ_T = 1


def test_the_detail_out_leaves_zero_terminal_snr_and_the_coarse_scale_as_they_were():
    plain, with_out = trained_looking_unets()
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        before, after = plain(x, T, labels), with_out(x, T, labels)
    torch.testing.assert_close(after[3], before[3])  # t = 999
    torch.testing.assert_close(F.avg_pool2d(after, 2), F.avg_pool2d(before, 2), rtol=1e-5, atol=1e-5)
    assert (detail(after[:3]) - detail(before[:3])).abs().amax() > 0.01  # and it does act below T


def test_the_detail_out_leaves_the_input_skips_pass_through_unscaled():
    # the learned gain g(t, class)·x_t is not the network's prediction of the detail: c_out must not amplify it
    config = unet_config("cpu", 16, num_classes=4)
    torch.manual_seed(0)
    plain = UNet(config, SCHEDULE.alpha_bar).eval()
    torch.nn.init.normal_(plain.skip_gain.bias, std=1.0)  # the head stays zero: the output is the skip's alone
    with_out = rebuilt(plain, detail_out=True)
    x, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        before = plain(x, T, labels)
        torch.testing.assert_close(with_out(x, T, labels), before)
    assert detail(before).abs().amax() > 0.1


@pytest.mark.parametrize("flags", [["--model", "tiny"], ["--prediction", "x0"], ["--no-detail-skip"], ["--final-layer"]])
def test_the_detail_out_is_refused_without_the_detail_skip_or_with_the_final_layer(flags, tmp_path):
    result = run_script_in_this_process("train.py", *flags, "--detail-out", "--out", str(tmp_path))
    assert result.returncode == 2 and "--detail-out" in result.stderr


def test_the_detail_out_is_accepted_beside_the_default_detail_skip():
    check_config(TrainConfig(detail_out=True), {"detail_out": True})  # the cpu preset: the skip is on by default


def test_a_checkpoint_rebuilds_its_detail_out_from_its_schedule(tmp_path):
    result = run_script("train.py", *TINY, "--detail-skip", "--detail-out", "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    state = load_training_checkpoint(tmp_path / "checkpoint.pt")
    assert state["config"]["detail_out"] and state["model_config"]["detail_out"]
    model = load_ema_model(state, tmp_path / "checkpoint.pt")
    torch.testing.assert_close(model.detail_out_gain, (1 - SCHEDULE.alpha_bar).rsqrt().float())
