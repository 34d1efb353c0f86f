"""The training recipe's pieces with known answers: the paper's defaults, the learning rate, the EMA."""
import copy
from dataclasses import asdict

import pytest
import torch

from models import unet_config
from train import lr_at, resolve, update_ema
from train_config import TrainConfig, parse_args


def test_the_default_recipe_is_the_papers_zero_snr_v_prediction_and_v_loss():
    config = TrainConfig()
    assert (config.zero_snr, config.prediction, config.loss_space or config.prediction) == (True, "v", "v")


def test_the_default_learning_rate_decays_linearly_to_zero_over_the_last_fifth_of_the_steps():
    config = TrainConfig()
    assert (config.lr_schedule, config.decay_fraction) == ("wsd", 0.2)


def test_constant_learning_rate_warms_up_linearly_then_stays_constant():
    config = TrainConfig(lr=1e-3, warmup=100, steps=1000, lr_schedule="constant")
    assert [lr_at(s, config) for s in (0, 49, 99, 500, 999)] == pytest.approx([1e-5, 5e-4, 1e-3, 1e-3, 1e-3])


def test_wsd_learning_rate_is_constant_until_the_decay_then_falls_linearly_toward_zero():
    config = TrainConfig(lr=1e-3, warmup=100, steps=1000, lr_schedule="wsd", decay_fraction=0.2)
    assert [lr_at(s, config) for s in (99, 799, 800, 900, 999)] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-6])


def test_wsd_learning_rate_before_its_decay_does_not_depend_on_the_run_length():
    short, long = (TrainConfig(lr_schedule="wsd", decay_fraction=0.3, steps=s) for s in (1000, 4000))
    assert [lr_at(s, short) for s in range(0, 700, 50)] == [lr_at(s, long) for s in range(0, 700, 50)]


def test_adam_beta2_reaches_the_optimizer(tmp_path):
    from train import setup
    job = setup(TrainConfig(model="tiny", image_size=16, num_images=16, batch_size=8, adam_beta2=0.99,
                            out=str(tmp_path)), None)
    assert job.optimizer.defaults["betas"] == (0.9, 0.99)


def test_the_default_adam_beta2_is_0_95():
    assert TrainConfig().adam_beta2 == 0.95


def test_the_default_run_samples_its_last_weights_not_their_average():
    assert TrainConfig().ema_decay == 0.0


def test_an_average_of_decay_zero_is_the_model_bit_for_bit():
    torch.manual_seed(0)
    model, ema = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    for step in (0, 5, 1000):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        update_ema(ema, model, 0.0, step)
        assert all(torch.equal(e, p) for e, p in zip(ema.parameters(), model.parameters()))


def _pair(value: float = 1.0):
    model = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.zero_()
        for p in model.parameters():
            p.fill_(value)
    return ema, model


@pytest.mark.parametrize("step, decay, d", [(0, 0.999, 0.1), (3, 0.999, 10 / 19), (1000, 0.999, 3001 / 3010),
                                            (10_000, 0.999, 0.999), (10, 0.5, 0.5)])
def test_ema_decay_warms_up_as_one_plus_three_steps_over_ten_plus_three_steps(step, decay, d):
    ema, model = _pair()
    update_ema(ema, model, decay, step)
    for p in ema.parameters():  # from 0 toward 1: θ_ema = d·0 + (1 − d)·1
        torch.testing.assert_close(p, torch.full_like(p, 1 - d))


def test_ema_update_is_bit_identical_to_a_lerp_per_parameter():
    torch.manual_seed(0)
    model, ema = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    expected = copy.deepcopy(ema)
    for step in range(5):
        update_ema(ema, model, 0.999, step)
        with torch.no_grad():
            d = min(0.999, (1 + 3 * step) / (10 + 3 * step))
            for e, p in zip(expected.parameters(), model.parameters()):
                e.lerp_(p, 1 - d)
    for e, p in zip(expected.parameters(), ema.parameters()):
        assert torch.equal(e, p)


def test_the_cifar10_preset_brings_ddpms_recipe():
    given, _ = parse_args(["--dataset", "cifar10", "--model", "cifar10", "--data-dir", "d"])
    config = resolve(given, None)
    assert (config.lr, config.lr_schedule, config.adam_beta2, config.batch_size, config.warmup, config.ema_decay,
            config.hflip, config.steps) == (2e-4, "constant", 0.999, 128, 5_000, 0.9999, True, 800_000)
    assert unet_config("cifar10", 32).dropout == 0.1


def test_flags_given_override_the_presets_recipe():
    given, _ = parse_args(["--model", "cifar10", "--lr", "1e-4", "--steps", "1000", "--no-hflip"])
    config = resolve(given, None)
    assert (config.lr, config.steps, config.hflip, config.batch_size) == (1e-4, 1000, False, 128)


def test_the_cpu_preset_keeps_the_default_runs_recipe():
    assert resolve({}, None) == TrainConfig() and resolve({"model": "tiny"}, None) == TrainConfig(model="tiny")


def test_a_resumed_run_may_change_its_learning_rate_schedule():
    saved = {"config": asdict(TrainConfig(lr_schedule="constant"))}
    config = resolve({"lr_schedule": "wsd", "decay_fraction": 0.3}, saved)
    assert (config.lr_schedule, config.decay_fraction) == ("wsd", 0.3)


def test_the_brightness_experiment_and_the_earlier_arms_keep_adam_beta2_0_999():
    from experiments.common import EARLIER_RECIPE
    from experiments.recipe import BEFORE
    assert EARLIER_RECIPE["adam_beta2"] == BEFORE["adam_beta2"] == 0.999
