"""The detail skip: v's fixed pass-through of x_t's finest scale, v̂ = F(x_t) + (√ᾱ_t/σ_t)·D(x_t)."""
import pytest
import torch

import train
from diffusion import make_schedule
from models import UNet, unet_config
from models.checkpoint import load_ema_model, load_training_checkpoint
from train_config import TrainConfig, detail_skip_default
from tests.conftest import TINY, run_script, run_script_in_this_process

SCHEDULE = make_schedule("scaled_linear", 1000, zero_snr=True)


def gain_of(zero_snr: bool) -> torch.Tensor:
    """√(ᾱ_t/(1 − ᾱ_t)) of the default scaled_linear schedule, with or without zero terminal SNR."""
    alpha_bar = make_schedule("scaled_linear", 1000, zero_snr=zero_snr).alpha_bar
    return (alpha_bar / (1 - alpha_bar)).sqrt().float()


def fresh_unet(preset: str = "cpu", size: int = 16) -> UNet:
    """A UNet with the detail skip whose own output F starts at zero (zero-initialised head and skip gain)."""
    torch.manual_seed(0)
    config = unet_config(preset, size, num_classes=4)
    return UNet(type(config)(**{**config.__dict__, "detail_skip": True}), SCHEDULE.alpha_bar).eval()


def within_patch_detail(x: torch.Tensor) -> torch.Tensor:
    """x minus the mean of its 2×2 patch, written out patch by patch."""
    out = x.clone()
    for i in range(0, x.shape[-2], 2):
        for j in range(0, x.shape[-1], 2):
            out[..., i:i + 2, j:j + 2] -= x[..., i:i + 2, j:j + 2].mean((-2, -1), keepdim=True)
    return out


def test_the_detail_skip_passes_x_ts_within_patch_detail_with_gain_sqrt_alpha_bar_over_sigma():
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0, 19, 500])
    alpha_bar = SCHEDULE.alpha_bar[t]
    gain = (alpha_bar / (1 - alpha_bar)).sqrt().float().view(-1, 1, 1, 1)
    with torch.no_grad():
        out = fresh_unet()(x, t, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out, gain * within_patch_detail(x), rtol=1e-5, atol=1e-5)
    assert gain[0].item() == pytest.approx(34.3, abs=0.1) and gain[1].item() == pytest.approx(7.2, abs=0.1)


def test_the_detail_skip_adds_nothing_at_zero_terminal_snr():
    with torch.no_grad():
        out = fresh_unet()(torch.randn(2, 3, 16, 16), torch.tensor([999, 999]))
    assert torch.count_nonzero(out) == 0


def test_the_detail_skip_leaves_a_flat_image_untouched():
    flat = torch.ones(1, 3, 16, 16) * torch.tensor([0.3, -0.5, 0.9]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.count_nonzero(fresh_unet()(flat, torch.tensor([19]))) == 0


def test_a_unet_with_the_detail_skip_refuses_to_be_built_without_its_schedule():
    config = unet_config("cpu", 16)
    with pytest.raises(ValueError, match="alpha_bar"):
        UNet(type(config)(**{**config.__dict__, "detail_skip": True}))


def test_the_detail_skip_is_on_by_default_for_the_patch_unet_predicting_v_only():
    assert detail_skip_default(TrainConfig())  # the default run: cpu preset, v
    assert not detail_skip_default(TrainConfig(prediction="x0"))
    assert not detail_skip_default(TrainConfig(model="tiny"))
    assert not detail_skip_default(TrainConfig(objective="flow"))


@pytest.mark.parametrize("flags", [["--prediction", "x0"], ["--prediction", "eps", "--no-zero-snr"], ["--objective", "flow"]])
def test_the_detail_skip_is_refused_where_the_network_does_not_predict_v(flags, tmp_path):
    # --out away from runs/default, where a user's default run would answer first with its own checkpoint
    result = run_script_in_this_process("train.py", *flags, "--detail-skip", "--out", str(tmp_path))
    assert result.returncode == 2 and "--detail-skip" in result.stderr


def test_the_two_schedules_give_different_gains():  # else the tests below could not tell them apart
    assert not torch.allclose(gain_of(zero_snr=True)[1:], gain_of(zero_snr=False)[1:])
    assert gain_of(zero_snr=True)[999] == 0 < gain_of(zero_snr=False)[999]


@pytest.mark.parametrize("zero_snr", [True, False])
def test_train_builds_the_detail_skip_from_the_runs_own_schedule(zero_snr, tmp_path):
    config = TrainConfig(model="tiny", image_size=16, num_images=64, batch_size=8, zero_snr=zero_snr, detail_skip=True,
                         out=str(tmp_path))
    with torch.random.fork_rng():
        job = train.setup(config, None)
    for model in (job.model, job.ema):
        torch.testing.assert_close(model.detail_skip.gain, gain_of(zero_snr), atol=0, rtol=0)


@pytest.mark.parametrize("schedule_flags, zero_snr", [([], True), (["--no-zero-snr"], False)])
def test_a_checkpoint_rebuilds_its_detail_skip_from_its_own_schedule(schedule_flags, zero_snr, tmp_path):
    result = run_script("train.py", *TINY, *schedule_flags, "--prediction", "v", "--detail-skip", "--steps", "2",
                        "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    state = load_training_checkpoint(tmp_path / "checkpoint.pt")
    assert state["config"]["detail_skip"] and state["model_config"]["detail_skip"]
    model = load_ema_model(state, tmp_path / "checkpoint.pt")
    torch.testing.assert_close(model.detail_skip.gain, gain_of(zero_snr), atol=0, rtol=0)
