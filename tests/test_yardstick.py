import json

import pytest
import torch
import torch.nn.functional as F

from data import make_shapes
from evaluation.fid import fid_quality
from evaluation.yardstick import load_feature_net, shapes_quality
from tests.conftest import ROOT, run_script

SIZE, N = 16, 256


@pytest.fixture(scope="module")
def cache():
    """The scripts' own cache (runs/yardstick): the suite builds the 16 px network and reference once."""
    return ROOT / "runs" / "yardstick"


@pytest.fixture(scope="module")
def held_out():
    images, labels, _ = make_shapes(N, SIZE, seed=4242)
    return images, labels


def blur(x: torch.Tensor) -> torch.Tensor:
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x


@pytest.mark.slow
def test_feature_net_is_the_same_network_for_the_same_seed(tmp_path):
    # Two builds on this machine (a cache from another CPU may differ in rounding: see below).
    cached, fresh = load_feature_net(SIZE, tmp_path / "a"), load_feature_net(SIZE, tmp_path / "b")
    for a, b in zip(cached.state_dict().values(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_feature_net_recognises_the_class_of_held_out_shapes(cache, held_out):
    assert shapes_quality(*held_out, cache_dir=cache)["data_class_accuracy"] > 0.7


def test_yardstick_ranks_held_out_data_above_blurred_data(cache, held_out):
    images, labels = held_out
    data, blurred = shapes_quality(images, labels, cache_dir=cache), shapes_quality(blur(images), labels, cache_dir=cache)
    assert data["fd_ratio"] < blurred["fd_ratio"]
    assert blurred["hf_ratio"] < 0.8 < data["hf_ratio"]


def test_yardstick_ranks_held_out_data_above_noisy_data(cache, held_out):
    images, labels = held_out
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    data, grain = shapes_quality(images, labels, cache_dir=cache), shapes_quality(noisy, labels, cache_dir=cache)
    assert grain["fd_ratio"] > 3 * data["fd_ratio"]
    assert grain["hf_ratio"] > 2 and 0.8 < data["hf_ratio"] < 1.2


def test_class_accuracy_counts_the_classes_asked_for(cache, held_out):
    images, labels = held_out
    right, wrong = shapes_quality(images, labels, cache_dir=cache), shapes_quality(images, (labels + 1) % 4, cache_dir=cache)
    assert right["class_accuracy"] > 0.7 > 0.3 > wrong["class_accuracy"]


def test_held_out_data_scores_near_one_on_every_reference_set(cache, held_out):
    for reference_set in (0, 1):
        q = shapes_quality(*held_out, reference_set=reference_set, cache_dir=cache)
        # The feature net trains to different weights on different CPUs (float rounding): the ratio for
        # held-out data measured about 1 on an AMD EPYC and 0.47 on an Intel Xeon, both near the data's.
        assert 0.3 < q["fd_ratio"] < 2 and q["w1"] < 0.05 and 0.85 < q["spread_ratio"] < 1.15


def test_fid_path_runs_with_a_stand_in_extractor(held_out):
    images, _ = held_out
    extractor = lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1)  # noqa: E731  per-channel means
    same = fid_quality(images[:128], images[128:], extractor)
    shifted = fid_quality((images[:128] + 0.5).clamp(-1, 1), images[128:], extractor)
    assert set(same) >= {"fid", "kid", "hf_ratio", "spread_ratio", "w1"}
    assert shifted["fid"] > 5 * same["fid"] and shifted["kid"] > same["kid"]


def test_sample_evaluate_prints_one_parsable_quality_line(tiny_run):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--evaluate", "--num-samples", "16",
                        "--num-steps", "2", "--out", str(tiny_run / "evaluated.png"))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("quality ")]
    assert len(lines) == 1
    quality = json.loads(lines[0].removeprefix("quality "))
    assert quality["num_samples"] == 16 and {"fd_ratio", "hf_ratio", "class_accuracy", "w1"} <= set(quality)
