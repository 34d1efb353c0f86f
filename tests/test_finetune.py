"""train.py --init-from: fine-tuning an existing model to the paper's fixes (§4)."""
import json

import torch

from models import UNet, unet_config
from models.checkpoint import load_weights
from tests.conftest import TINY, run_script, run_script_in_this_process


def test_init_from_loads_exactly_the_sources_weights_and_ema(tiny_run):
    source = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    model, ema = (UNet(unet_config("tiny", 16, 4)) for _ in range(2))
    load_weights(str(tiny_run / "checkpoint.pt"), model, ema)
    for name, value in model.state_dict().items():
        assert torch.equal(value, source["model"][name]) and torch.equal(ema.state_dict()[name], source["ema"][name])


def test_fine_tuning_starts_a_fresh_step_count_and_optimizer_and_may_change_the_fixes(tiny_run, tmp_path):
    result = run_script("train.py", *TINY, "--init-from", str(tiny_run / "checkpoint.pt"), "--no-zero-snr",
                        "--prediction", "eps", "--steps", "2", "--ckpt-every", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["config"]["prediction"] == "eps" and not state["config"]["zero_snr"]
    assert all(s["step"].item() == 2 for s in state["optimizer"]["state"].values())  # not 4 + 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1


def test_fine_tuning_refuses_another_model_size_in_one_line(tiny_run, tmp_path):
    for change in (["--model", "cpu"], ["--image-size", "32"]):
        result = run_script_in_this_process("train.py", *TINY, *change, "--init-from", str(tiny_run / "checkpoint.pt"),
                            "--steps", "1", "--out", str(tmp_path / change[0]))
        assert result.returncode == 2
        assert "holds another model" in result.stderr and len(result.stderr.strip().splitlines()) == 1
