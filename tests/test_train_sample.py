"""train.py and sample.py end to end, run as a user runs them."""
import json

import torch
from PIL import Image

from tests.conftest import TINY, run_script, write_celeba, write_cifar10, write_image_folder


def test_training_writes_checkpoint_metrics_and_a_grid_per_checkpoint(tiny_run):
    assert (tiny_run / "checkpoint.pt").is_file()
    assert sorted(p.name for p in tiny_run.glob("samples_*.png")) == ["samples_000002.png", "samples_000004.png"]
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["images_per_sec"] > 0 for r in rows)


def test_sample_writes_a_valid_grid_and_prints_the_brightness_summary(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--num-samples", "6", "--num-steps", "3",
                        "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "each"))
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 32 and grid.mode == "RGB"
    assert len(list((tmp_path / "each").glob("*.png"))) == 6
    lines = dict(line.split(" {", 1) for line in result.stdout.splitlines() if "brightness {" in line)
    for name in ("brightness", "data brightness"):
        assert set(json.loads("{" + lines[name])) == {"mean", "std", "p5", "p95", "frac_dark", "frac_bright"}


def test_sample_with_a_class_and_rescaled_guidance_runs(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--class", "stripes", "--guidance", "5",
                        "--num-samples", "2", "--num-steps", "2", "--out", str(tmp_path / "g.png"))
    assert result.returncode == 0, result.stderr


def test_same_seed_gives_the_same_samples(tiny_run, tmp_path):
    for name in ("a", "b"):
        run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--num-samples", "2", "--num-steps", "2",
                   "--eta", "1", "--out-dir", str(tmp_path / name), "--out", str(tmp_path / f"{name}.png"))
    assert (tmp_path / "a" / "000001.png").read_bytes() == (tmp_path / "b" / "000001.png").read_bytes()


def test_resume_continues_from_the_checkpoint_to_the_new_step_count(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = run_script("train.py", "--out", str(run), "--resume", "--steps", "6")
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 6
    assert [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_cifar10_folder_trains_through_the_cli(tmp_path):
    write_cifar10(tmp_path / "cifar")
    result = run_script("train.py", *TINY, "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                        "--steps", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["classes"][9] == "truck"


def test_image_folder_trains_unconditionally_through_the_cli(tmp_path):
    write_image_folder(tmp_path / "images", per_class=4)
    result = run_script("train.py", "--model", "tiny", "--dataset", "folder", "--data-dir", str(tmp_path / "images"),
                        "--image-size", "16", "--no-class-cond", "--batch-size", "4", "--steps", "2",
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert state["model_config"]["num_classes"] == 0 and state["config"]["label_dropout"] == 0


def test_celeba_folder_trains_unconditionally_through_the_cli(tmp_path):
    write_celeba(tmp_path / "faces")
    result = run_script("train.py", "--model", "tiny", "--dataset", "celeba", "--data-dir", str(tmp_path / "faces"),
                        "--image-size", "16", "--batch-size", "2", "--steps", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["model_config"]["num_classes"] == 0


def test_two_process_ddp_training_through_torchrun_writes_one_checkpoint(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
         "--device", "cpu", *TINY, "--steps", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3
