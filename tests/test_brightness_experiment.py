"""The brightness experiment end to end at its smoke size: each part's rows, and resuming (`pytest -m slow`)."""
import json
import subprocess
import sys

import pytest

from experiments.brightness import PRESETS
from experiments.common import matches
from models.checkpoint import load_training_checkpoint
from tests.conftest import ROOT, write_image_folder

pytestmark = pytest.mark.slow  # a minute or more: it trains a dozen models
QUICK_PARTS = ("--parts", "table", "steps", "guidance", "first_step", "leak")


def run_experiment(tmp, *args):
    return subprocess.run([sys.executable, "-m", "experiments.brightness", "--out", str(tmp / "out"), "--work",
                           str(tmp / "work"), *args], capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("brightness")
    result = run_experiment(tmp, "--preset", "smoke", *QUICK_PARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp, json.loads((tmp / "out" / "results.json").read_text())["rows"]


def test_the_table_part_samples_every_ideal_denoiser_and_trained_model_with_leading_and_trailing_steps(smoke):
    _, rows = smoke
    p = PRESETS["smoke"]
    for name in p.ideal:
        assert {r["spacing"] for r in rows if matches(r, kind="ideal", model=name)} == {"leading", "trailing"}
    for name in p.models:
        for seed in range(p.seeds):
            assert {r["spacing"] for r in rows if matches(r, kind="trained", model=name, seed=seed)} == {"leading", "trailing"}


def test_every_sampled_row_has_the_brightness_of_each_sample_and_its_summary(smoke):
    _, rows = smoke
    sampled = [r for r in rows if r["kind"] not in ("first_step", "first_step_gain")]
    for key in ("mean", "std", "frac_dark", "frac_bright", "spread_ratio", "w1", "hf_ratio", "clip_fraction"):
        assert all(isinstance(r[key], float) for r in sampled), key
    assert all(len(r["brightness"]) == PRESETS["smoke"].num_samples for r in sampled)


def test_offset_noise_is_sampled_both_from_plain_noise_and_from_the_offset_it_was_trained_on(smoke):
    _, rows = smoke
    assert {r["x_T_offset"] for r in rows if matches(r, kind="trained", model="offset_noise")} == {0.0, 0.1}
    assert {r["x_T_offset"] for r in rows if matches(r, kind="ideal", model="ideal_offset_noise")} == {0.0, 0.1}


def test_the_steps_sweep_covers_every_spacing_and_step_count(smoke):
    _, rows = smoke
    p = PRESETS["smoke"]
    for model in ("ideal_baseline", "ideal_fixed", "ideal_flow", "baseline", "fixed", "flow"):
        cells = {(r["spacing"], r["steps"]) for r in rows if matches(r, kind="steps", model=model, seed=0)}
        assert cells == {(s, n) for s in ("leading", "linspace", "trailing") for n in p.sweep_steps}, model


def test_the_guidance_grid_has_a_cell_per_guided_weight_and_rescale_and_one_unguided_cell(smoke):
    _, rows = smoke
    cells = {(r["guidance"], r["rescale"]) for r in rows if matches(r, kind="guidance_grid", seed=0)}
    assert cells == {(1, 0), (4, 0), (4, 0.7)}


def test_the_first_step_is_measured_per_class_for_the_fixed_model_and_once_for_the_ideal_denoiser(smoke):
    _, rows = smoke
    first = [r for r in rows if r["kind"] == "first_step"]
    assert sorted(r["label"] for r in first if r["model"] == "fixed" and r["seed"] == 0) == [0, 1, 2, 3]
    ideal = next(r for r in first if r["model"] == "ideal_fixed")
    assert ideal["rms_to_class_mean"] < 1e-6  # at zero SNR the ideal denoiser returns the data mean


def test_the_leak_part_measures_the_gain_at_t_T_and_puts_the_leak_back_for_every_model(smoke):
    _, rows = smoke
    for model in ("ideal_baseline", "ideal_fixed", "ideal_flow", "baseline", "fixed", "offset_noise", "flow"):
        kinds = {r["kind"] for r in rows if r["model"] == model}
        assert {"first_step_gain", "leak", "leak_intervention", "leak_everaert"} <= kinds, model
    gain = {r["model"]: r["gain"]["gain"] for r in rows if r["kind"] == "first_step_gain" and r["seed"] == 0}
    assert gain["ideal_fixed"] == pytest.approx(0, abs=1e-6) and gain["ideal_baseline"] > 1


def test_a_leak_put_back_changes_the_flawed_schedules_start_and_not_a_zero_snr_one(smoke):
    _, rows = smoke

    def spread(kind, model):
        return next(r["spread_ratio"] for r in rows if matches(r, kind=kind, model=model))

    assert spread("leak_intervention", "ideal_fixed") == spread("leak", "ideal_fixed")
    assert spread("leak_intervention", "ideal_baseline") != spread("leak", "ideal_baseline")


def test_running_again_computes_no_row_and_trains_no_model(smoke):
    tmp, rows = smoke
    result = run_experiment(tmp, "--preset", "smoke", *QUICK_PARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training " not in result.stdout and " rows] " not in result.stdout
    assert json.loads((tmp / "out" / "results.json").read_text())["rows"] == rows


def test_the_report_is_written_again_from_its_results_file_alone(smoke, tmp_path):
    tmp, _ = smoke
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text((tmp / "out" / "results.json").read_text())
    result = run_experiment(tmp_path, "--report-only")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## steps" in result.stdout and "## leak" in result.stdout
    assert not (tmp_path / "work").exists()


def test_fine_tuning_and_quality_pair_each_fine_tuned_model_with_the_fixed_model_at_equal_total_steps(tmp_path):
    result = run_experiment(tmp_path, "--preset", "smoke", "--parts", "finetune", "quality")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    p = PRESETS["smoke"]
    for seed in range(p.seeds):
        for n in p.finetune_steps:
            assert {r["model"] for r in rows if matches(r, kind="finetune", finetune_steps=n, seed=seed)} == {"finetuned", "scratch"}
    scratch = load_training_checkpoint(tmp_path / "work" / "models" / "scratch_4" / "checkpoint.pt")
    assert scratch["step"] == p.train_steps + 4  # the fixed model's run, continued by N steps
    assert {r["model"] for r in rows if r["kind"] == "quality"} == {"baseline", "fixed"}
    assert all("class_accuracy" in r["quality"] and r["quality"]["feature_net"] for r in rows if r["kind"] == "quality")


def test_the_experiment_runs_on_an_image_folder_with_the_reference_held_out(tmp_path):
    write_image_folder(tmp_path / "images", per_class=16, size=(20, 20))
    result = run_experiment(tmp_path, "--preset", "smoke", "--parts", "table", "--dataset", "folder", "--data-dir",
                            str(tmp_path / "images"), "--image-size", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert all(len(r["brightness"]) == 16 for r in rows)  # half of the 32 images, held out


def test_a_run_of_some_parts_keeps_the_rows_of_the_others_in_its_results_file(smoke, tmp_path):
    tmp, rows = smoke
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text((tmp / "out" / "results.json").read_text())
    result = run_experiment(tmp_path, "--preset", "smoke", "--parts", "first_step")  # a fresh work folder
    assert result.returncode == 0, result.stderr[-2000:]
    after = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert {r["name"] for r in after} == {r["name"] for r in rows}
    assert "## steps" in result.stdout
