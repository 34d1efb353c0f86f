"""What the scripts guarantee when runs are killed and inputs are wrong."""
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from models.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import ROOT, run_script, run_script_in_this_process

FAST = ["--model", "tiny", "--image-size", "16", "--num-images", "64", "--batch-size", "4", "--log-every", "1"]


def _train(out, *args):
    result = run_script("train.py", *FAST, "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    return torch.load(out / "checkpoint.pt", weights_only=True)


def _assert_same_training_state(a, b):
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for i, s in a["optimizer"]["state"].items():
        assert all(torch.equal(s[k], b["optimizer"]["state"][i][k]) for k in s)
    assert all(torch.equal(x, y) for x, y in zip(a["rng"], b["rng"], strict=True))


# A run trained to fewer steps is the start of a longer one only at a constant rate: the default decays over
# the last fifth of --steps. The tests that stop a run by giving it fewer steps train at a constant rate.
CONSTANT = ["--lr-schedule", "constant"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """20 steps in one go at a constant rate: what a shorter run resumed to 20 steps must reproduce bit for bit."""
    return _train(tmp_path_factory.mktemp("whole"), *CONSTANT, "--steps", "20", "--ckpt-every", "100")


def test_resume_from_a_step_between_checkpoints_is_bit_exact(uninterrupted, tmp_path):
    _train(tmp_path, *CONSTANT, "--steps", "7", "--ckpt-every", "4")  # the last checkpoint is at step 7, off the grid of 4
    _assert_same_training_state(_train(tmp_path, "--resume", "--steps", "20", "--ckpt-every", "100"), uninterrupted)


@pytest.mark.slow
def test_resume_from_a_checkpoint_boundary_is_bit_exact(uninterrupted, tmp_path):
    _train(tmp_path, *CONSTANT, "--steps", "8", "--ckpt-every", "4")
    _assert_same_training_state(_train(tmp_path, "--resume", "--steps", "20", "--ckpt-every", "100"), uninterrupted)


@pytest.mark.slow
def test_a_flow_run_resumes_bit_exactly(tmp_path):
    whole = _train(tmp_path / "whole", *CONSTANT, "--objective", "flow", "--steps", "12", "--ckpt-every", "100")
    _train(tmp_path / "parts", *CONSTANT, "--objective", "flow", "--steps", "5", "--ckpt-every", "100")
    _assert_same_training_state(_train(tmp_path / "parts", "--resume", "--steps", "12"), whole)


@pytest.mark.slow
def test_a_constant_rate_run_given_its_decay_on_resume_is_bit_exactly_the_run_that_decayed_from_the_start(tmp_path):
    whole = _train(tmp_path / "whole", "--steps", "10", "--ckpt-every", "100")  # the default: the rate falls at step 9
    _train(tmp_path / "branch", *CONSTANT, "--steps", "8", "--ckpt-every", "100")
    _assert_same_training_state(_train(tmp_path / "branch", "--resume", "--lr-schedule", "wsd", "--steps", "10"), whole)


def _start(out, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *FAST, "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _wait_for_lines(path, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not reach {n} logged steps")


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_exits_0_and_resumes_bit_exactly_at_the_default_learning_rate_decay(tmp_path):
    uninterrupted = _train(tmp_path / "whole", "--steps", "40", "--ckpt-every", "1000")
    tmp_path = tmp_path / "stopped"
    proc = _start(tmp_path, "--steps", "40", "--ckpt-every", "1000")
    _wait_for_lines(tmp_path / "metrics.jsonl", 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    stopped_at = load_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert 5 <= stopped_at < 40
    _assert_same_training_state(_train(tmp_path, "--resume", "--steps", "40"), uninterrupted)


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    for delay in (1.5, 2.0, 2.5, 3.0):
        proc = _start(tmp_path, "--steps", "100000", "--ckpt-every", "1", *(["--resume"] if delay > 1.5 else []))
        if delay == 1.5:
            _wait_for_lines(tmp_path / "metrics.jsonl", 1, proc)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] >= 1
    assert len(list(tmp_path.glob(".checkpoint.pt*.tmp"))) <= 1  # killed writes do not pile up


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    _RunsCode.marker = tmp_path / "code-ran"
    torch.save({"format": FORMAT, "config": {}, "payload": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refuses"):
        load_checkpoint(tmp_path / "evil.pt")
    result = run_script("sample.py", str(tmp_path / "evil.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not _RunsCode.marker.exists()


def test_checkpoint_write_replaces_the_file_atomically(tmp_path):
    save_checkpoint({"step": 1}, tmp_path / "c.pt")
    save_checkpoint({"step": 2}, tmp_path / "c.pt")
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 2
    assert os.listdir(tmp_path) == ["c.pt"]


def test_a_diverging_run_names_the_step_and_exits_1(tmp_path):
    result = run_script("train.py", *FAST, "--out", str(tmp_path), "--steps", "300", "--ckpt-every", "1",
                        "--lr", "1e30", "--grad-clip", "0", "--warmup", "0")
    assert result.returncode == 1, result.stderr
    assert "at step" in result.stderr and "Traceback" not in result.stderr
    step = int(result.stderr.split("at step ")[1].split(";")[0])
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == step - 1


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    """A good checkpoint and broken variants of it."""
    root = tmp_path_factory.mktemp("bad")
    good = _train(root / "good", "--steps", "1")
    (root / "truncated.pt").write_bytes((root / "good" / "checkpoint.pt").read_bytes()[:5000])
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    save_checkpoint({**good, "config": {**good["config"], "prediction": "eps"}}, root / "eps_zero_snr.pt")
    save_checkpoint({**good, "model_config": {**good["model_config"], "base_channels": 8}}, root / "mismatched.pt")
    (root / "a_file").write_text("")
    shutil.copytree(root / "good", root / "resumable")
    (root / "stopped").mkdir()
    save_checkpoint({**good, "config": {**good["config"], "steps": 5}}, root / "stopped" / "checkpoint.pt")  # at 1 of 5
    return root


BAD_INPUTS = [
    ("train.py", ["--steps", "0"], "--steps must be positive"),
    ("train.py", ["--batch-size", "-4"], "--batch-size must be positive"),
    ("train.py", ["--steps", "many"], "invalid int value"),
    ("train.py", ["--lr", "0"], "--lr must be positive"),
    ("train.py", ["--image-size", "15"], "multiple of 2"),
    ("train.py", ["--model", "cpu", "--image-size", "20"], "multiple of 8"),
    ("train.py", ["--dataset", "mnist"], "invalid choice"),
    ("train.py", ["--dataset", "folder", "--data-dir", "{root}/nowhere"], "does not exist"),
    ("train.py", ["--dataset", "cifar10", "--data-dir", "{root}"], "--download"),
    ("train.py", ["--prediction", "eps"], "zero-SNR"),
    ("train.py", ["--ema-decay", "1.5"], "--ema-decay"),
    ("train.py", ["--adam-beta2", "1"], "--adam-beta2"),
    ("train.py", ["--decay-fraction", "0"], "--decay-fraction must be positive"),
    ("train.py", ["--decay-fraction", "1.5"], "at most 1"),
    ("train.py", ["--lr-schedule", "constant", "--decay-fraction", "0.3"], "needs --lr-schedule wsd"),
    ("train.py", ["--label-dropout", "1"], "--label-dropout"),
    ("train.py", ["--offset-noise", "-1"], "--offset-noise"),
    ("train.py", ["--timesteps", "1"], "--timesteps"),
    ("train.py", ["--device", "cuda"], "no CUDA GPU"),
    ("train.py", ["--image-size", "0"], "--image-size must be positive"),
    ("train.py", ["--data-dir", "{root}"], "does nothing with --dataset shapes"),
    ("train.py", ["--hold-out", "-1"], "--hold-out"),
    ("train.py", ["--init-from", "{root}/missing.pt"], "no checkpoint"),
    ("train.py", ["--out", "{root}/a_file/run"], "cannot write"),
    ("train.py", ["--out", "{root}/nothing_here", "--resume"], "no checkpoint"),
    ("train.py", ["--out", "{root}/stopped"], "stopped at step 1 of 5; pass --resume"),
    ("train.py", ["--out", "{root}/good", "--steps", "3"], "finished run of 1 steps; pass --resume"),
    ("train.py", ["--out", "{root}/good", "--prediction", "x0"], "trained differently"),
    ("train.py", ["--out", "{root}/resumable", "--resume", "--prediction", "x0"], "trained differently"),
    ("sample.py", ["{root}/missing.pt"], "no checkpoint"),
    ("sample.py", ["{root}/truncated.pt"], "truncated or corrupt"),
    ("sample.py", ["{root}/foreign.pt"], "not a checkpoint"),
    ("sample.py", ["{root}/mismatched.pt"], "does not hold a model"),
    ("sample.py", ["{root}/eps_zero_snr.pt"], "zero-SNR"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--num-steps", "0"], "num_inference_steps"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--num-steps", "1001"], "num_inference_steps"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--guidance-rescale", "1.5"], "--guidance-rescale"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--class", "hexagon"], "unknown class"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--class", "9"], "unknown class"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--unconditional", "--guidance", "5"], "without guidance"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--guidance", "1", "--guidance-interval", "0", "700"],
     "this draws unguided"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--guidance-interval", "700", "0"], "LOW ≤ HIGH"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--spacing", "random"], "invalid choice"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--num-samples", "-1"], "--num-samples"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--offset", "2"], "leading timesteps only"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--offset-noise", "-1"], "--offset-noise"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--sampler", "dpmpp-2m", "--eta", "1"], "--eta"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--out", "{root}/a_file/grid.png"], "cannot write"),
    ("sample.py", ["{root}/good/checkpoint.pt", "--out", "{root}/grid"], "name an image file"),
]


@pytest.mark.parametrize("script, args, message", BAD_INPUTS, ids=[f"{s}:{' '.join(a)}" for s, a, _ in BAD_INPUTS])
def test_bad_input_ends_with_one_clear_line_and_exit_2(bad_checkpoints, tmp_path, script, args, message):
    args = [a.format(root=bad_checkpoints) for a in args]
    if script == "train.py" and "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: --device cuda would train")
    result = run_script_in_this_process(script, *(FAST if script == "train.py" else []), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("script, args, message", [("train.py", ["--lr", "0"], "--lr must be positive"),
                                                   ("sample.py", ["missing.pt"], "no checkpoint")])
def test_bad_input_in_a_fresh_interpreter_ends_with_one_line_and_exit_2(tmp_path, script, args, message):
    # The cases above run in the test's process; here the whole process, imports included, as a user meets it.
    result = run_script(script, *args, "--out", str(tmp_path / ("run" if script == "train.py" else "grid.png")))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_a_nan_gradient_at_a_checkpoint_step_keeps_the_previous_checkpoint_bit_for_bit(tmp_path):
    good = _train(tmp_path / "good", "--steps", "2", "--ckpt-every", "2")
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "nan_probe.py"), "4", *FAST, "--out", str(tmp_path / "nan"),
                             "--steps", "4", "--ckpt-every", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "at step 4" in result.stderr and "Traceback" not in result.stderr
    kept = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)
    _assert_same_training_state(kept, good)


def test_a_run_with_the_unfused_adamw_of_mps_trains(tmp_path, monkeypatch):
    # The fused AdamW skips a non-finite step through `found_inf`; the unfused kernels (all mps has) refuse that flag.
    import train

    fused_adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, **options: fused_adamw(params, **{**options, "fused": False}))
    config = train.TrainConfig(model="tiny", image_size=16, num_images=64, batch_size=4, steps=2, ckpt_every=2,
                               device="cpu", out=str(tmp_path))
    assert load_checkpoint(train.train(config))["step"] == 2


def test_a_bad_flag_is_one_line_on_stderr_and_exit_2(tmp_path):
    result = run_script("train.py", "--image-size", "0", "--out", str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unexpected_internal_error_keeps_its_traceback(tmp_path):
    # A ValueError from inside the code is a bug, not bad input: it must show where it came from.
    probe = ("import sys, train\n"
             "def broken(*args, **kwargs):\n    raise ValueError('a bug inside the library')\n"
             "train.make_schedule = broken\n"
             f"sys.argv = ['train.py', '--model', 'tiny', '--num-images', '64', '--out', {str(tmp_path)!r}]\n"
             "train.run(train.main)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "in broken" in result.stderr and "a bug inside the library" in result.stderr


class _FailsWhenCalled(torch.nn.Module):
    """What torch.compile returns where the C++ compiler is missing: compiling fails at the first call."""

    def forward(self, *args):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmany more lines")


def test_a_model_that_cannot_compile_trains_in_eager_mode_after_a_one_line_notice(monkeypatch, capsys):
    from runtime import compile_or_eager

    monkeypatch.setattr(torch, "compile", lambda model: _FailsWhenCalled())
    model = torch.nn.Linear(3, 2)
    assert compile_or_eager(model, (torch.randn(4, 3),)) is model
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and "eager mode" in notice[0] and "No working C++ compiler" in notice[0]
    assert all(p.grad is None for p in model.parameters())


def test_a_train_py_run_whose_compile_fails_trains_as_the_eager_run_does(monkeypatch, tmp_path, capsys):
    import train
    from train_config import TrainConfig

    config = TrainConfig(model="tiny", image_size=16, num_images=32, batch_size=8, steps=3, log_every=1, ckpt_every=3)
    eager = train.train(replace(config, out=str(tmp_path / "eager")))
    monkeypatch.setattr(torch, "compile", lambda model: _FailsWhenCalled())
    fallen_back = train.train(replace(config, compile=True, out=str(tmp_path / "compile")))
    assert "training in eager mode" in capsys.readouterr().err
    a, b = (torch.load(p, weights_only=True) for p in (eager, fallen_back))
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
