import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_benchmark_runs_on_the_tiny_preset_and_writes_every_part(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "bench.py", "--quick", "--presets", "tiny", "--device", "cpu", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)  # the --compile row compiles for a minute or more
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())
    models = {(r["model"], r["precision"]) for r in results["models"]}
    assert {("ours: tiny, channels-last", "fp32"), ("ours: tiny, usual layout", "bf16"),
            ("train.py loop: tiny, defaults", "fp32"), ("train.py loop: tiny, --compile", "fp32"),
            ("train.py loop: tiny, one thread", "fp32")} <= models
    has_diffusers = importlib.util.find_spec("diffusers") is not None
    assert any(name.startswith("diffusers") for name, _ in models) == has_diffusers
    assert all(r["train_img_s"] > 0 for r in results["models"])
    assert results["sampler"]["overhead"] > -1 and results["ideal"]["samples_s"] > 0
    assert [r["dataset"] for r in results["data"]] == ["shapes", "folder", "cifar10"]
    assert "| ours: tiny, channels-last | fp32 |" in result.stdout and "GPU rows: not measured" in result.stdout
    loops = [r for r in results["models"] if r["model"].startswith("train.py loop")]
    assert [r["loop"] for r in results["ratios"]] == [r["model"] for r in loops]
    for ratio, loop in zip(results["ratios"], loops):
        peers = [r["train_img_s"] for r in results["models"] if r["model"].startswith("diffusers")
                 and r["precision"] == loop["precision"]]
        assert ratio["ratio"] == (pytest.approx(loop["train_img_s"] / max(peers)) if has_diffusers else None)
