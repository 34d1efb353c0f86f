import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from data import make_shapes
from evaluation.fid import fid_quality
from evaluation import yardstick
from evaluation.yardstick import load_feature_net, shapes_quality
from models.checkpoint import CheckpointError, save_checkpoint
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
def test_two_cache_builds_from_scratch_give_the_same_feature_distance(tmp_path, held_out):
    images, labels = held_out
    first, second = (shapes_quality((images + 0.05).clamp(-1, 1), labels, cache_dir=tmp_path / name) for name in "ab")
    assert first["fd_ratio"] == pytest.approx(second["fd_ratio"], abs=1e-3)


def test_the_yardstick_reads_the_committed_frozen_weights():
    frozen = torch.load(yardstick.FROZEN_DIR / f"shapes{SIZE}.pt", weights_only=True)["net"]
    for name, weight in load_feature_net(SIZE).state_dict().items():
        assert torch.equal(weight, frozen[name]), name


def frozen_copy(tmp_path, monkeypatch, names=("SHA256SUMS", f"shapes{SIZE}.pt")):
    """The frozen weights' folder copied to tmp_path (only `names`), and the yardstick pointed at it."""
    for name in names:
        shutil.copy(yardstick.FROZEN_DIR / name, tmp_path / name)
    monkeypatch.setattr(yardstick, "FROZEN_DIR", tmp_path)
    monkeypatch.setattr(yardstick, "train_feature_net", lambda *a, **k: pytest.fail("trained a feature network"))


def assert_refused_in_one_line(image_size: int, match: str):
    with pytest.raises(CheckpointError, match=match) as refused:
        load_feature_net(image_size)
    message = str(refused.value)
    assert "\n" not in message and f"python -m evaluation.train_feature_net --image-size {image_size}" in message


def test_a_frozen_weights_file_that_does_not_match_its_sha256_is_refused(tmp_path, monkeypatch):
    frozen_copy(tmp_path, monkeypatch)
    weights = bytearray((tmp_path / f"shapes{SIZE}.pt").read_bytes())
    weights[-100] ^= 1
    (tmp_path / f"shapes{SIZE}.pt").write_bytes(weights)
    assert_refused_in_one_line(SIZE, "does not match its SHA-256")


def test_a_missing_frozen_weights_file_is_refused_and_never_trained_here(tmp_path, monkeypatch):
    frozen_copy(tmp_path, monkeypatch, names=("SHA256SUMS",))
    assert_refused_in_one_line(SIZE, "is missing")


def test_an_image_size_without_a_frozen_hash_is_refused_and_never_trained_here(tmp_path, monkeypatch):
    frozen_copy(tmp_path, monkeypatch)
    (tmp_path / "shapes8.pt").write_bytes((tmp_path / f"shapes{SIZE}.pt").read_bytes())  # a file, but no hash for it
    assert_refused_in_one_line(8, "no SHA-256 entry")
    with pytest.raises(CheckpointError, match="--image-size 8"):
        shapes_quality(torch.zeros(4, 3, 8, 8), cache_dir=tmp_path / "cache")


def test_the_quality_names_the_frozen_network_that_measured_it(cache, held_out):
    digest = yardstick.sha256(yardstick.FROZEN_DIR / f"shapes{SIZE}.pt")
    assert shapes_quality(*held_out, cache_dir=cache)["feature_net"] == digest[:16]


def test_the_reference_cache_name_changes_with_the_code_that_builds_the_reference(tmp_path):
    copies = []
    for i, source in enumerate(yardstick.REFERENCE_SOURCES):
        copies.append(tmp_path / f"{i}_{source.name}")
        copies[-1].write_bytes(source.read_bytes())
    assert yardstick.code_digest(copies) == yardstick.code_digest()  # the text names it, not where it lies
    built_another_way = copies[0].read_text().replace("REFERENCE_SEED + 2 * reference_set)",
                                                      "REFERENCE_SEED + 2 * reference_set + 1)")
    assert built_another_way != copies[0].read_text()
    copies[0].write_text(built_another_way)
    assert yardstick.code_digest(copies) != yardstick.code_digest()
    copies[0].write_bytes(yardstick.REFERENCE_SOURCES[0].read_bytes())
    copies[2].write_text(copies[2].read_text() + "\n# any change to the shapes\n")
    assert yardstick.code_digest(copies) != yardstick.code_digest()


def test_a_reference_cache_written_by_other_code_is_never_read(tmp_path, monkeypatch):
    # Small sets, so that building one here takes a moment.
    monkeypatch.setattr(yardstick, "REFERENCE_COUNT", 64)
    monkeypatch.setattr(yardstick, "POOL_COUNT", 64)
    stale = {"features": torch.zeros(3, 36), "stale": True}
    save_checkpoint(stale, yardstick.reference_path(SIZE, 0, tmp_path))
    assert yardstick.reference(SIZE, 0, tmp_path)["stale"]  # the cache named for this code is read
    changed = tmp_path / "changed_yardstick.py"
    changed.write_text(yardstick.REFERENCE_SOURCES[0].read_text() + "\n# the reference built another way\n")
    monkeypatch.setattr(yardstick, "REFERENCE_SOURCES", (changed, *yardstick.REFERENCE_SOURCES[1:]))
    rebuilt = yardstick.reference(SIZE, 0, tmp_path)
    assert "stale" not in rebuilt and rebuilt["features"].shape[0] == 64


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
        # Below 1 at this count: the denominator averages held-out sets drawn from one pool.
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
    assert quality["feature_net"] == yardstick.sha256(yardstick.FROZEN_DIR / f"shapes{SIZE}.pt")[:16]


def test_yardstick_reads_washed_out_colour_as_a_chroma_ratio_below_one(cache, held_out):
    images, labels = held_out
    grey = images.mean(1, keepdim=True)
    washed_out = 0.5 * images + 0.5 * grey
    data, faded = shapes_quality(images, labels, cache_dir=cache), shapes_quality(washed_out, labels, cache_dir=cache)
    assert 0.9 < data["chroma_ratio"] < 1.1 and 0.9 < data["background_chroma_ratio"] < 1.1
    assert faded["chroma_ratio"] == pytest.approx(0.5 * data["chroma_ratio"], rel=1e-4)
    assert faded["background_chroma_ratio"] == pytest.approx(0.5 * data["background_chroma_ratio"], rel=1e-4)
