import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, write_image_folder


TWO_SEEDS = ("--seeds", "2")  # the smoke preset trains one seed; two show the grouping over seeds
# The default suite runs the parts that need no extra training runs; finetune and quality: `pytest -m slow`.
QUICK_PARTS = ("--parts", "table", "steps", "guidance", "first_step", "leak")


def _run_preset(preset, out, *args):
    return subprocess.run([sys.executable, "-m", "experiments.brightness", "--preset", preset, "--out", str(out), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def _run(out, *args):
    return _run_preset("smoke", out, *args)


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("brightness")
    result = _run(out, *TWO_SEEDS, *QUICK_PARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    (out / "stdout.txt").write_text(result.stdout)
    (out / "stderr.txt").write_text(result.stderr)
    return out


@pytest.fixture(scope="module")
def experiment_with_every_part(tiny_experiment):
    result = _run(tiny_experiment, *TWO_SEEDS)  # the finished parts are read back, the others run
    assert result.returncode == 0, result.stderr[-2000:]
    return tiny_experiment


def test_experiment_writes_results_table_json_and_a_grid_per_row(tiny_experiment):
    results = json.loads((tiny_experiment / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    assert "ideal_baseline_leading_5" in names and "fixed_trailing_5" in names and "offset_noise_leading_5" in names
    assert {"ideal", "trained", "guidance"} <= {r["kind"] for r in results["rows"]}
    sampled = [r for r in results["rows"] if "mean" in r]  # rows of samples, not of one step's x̂0
    assert all((tiny_experiment / "grids" / f"{r['key']}.png").is_file() for r in sampled)
    table = (tiny_experiment / "RESULTS.md").read_text()
    assert all(f"| {r['name']} |" in table for r in sampled)


def test_every_row_reports_the_brightness_metrics(tiny_experiment):
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    rows = [r for r in rows if r["kind"] not in ("first_step", "leak_first", "first_step_gain")]
    for key in ("mean", "std", "p5", "p95", "frac_dark", "frac_bright", "spread_ratio", "w1", "hf_ratio", "clip_fraction"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert all(len(r["brightness"]) == 64 for r in rows)


def test_guidance_rows_compare_plain_and_rescaled_cfg(tiny_experiment):
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    assert sorted(r["rescale"] for r in rows if r["kind"] == "guidance") == [0.0, 0.7]


def test_running_again_redoes_no_finished_stage(tiny_experiment):
    before = {p: p.stat().st_mtime_ns for p in tiny_experiment.rglob("*") if p.suffix in (".pt", ".png") or p.parent.name == "rows"}
    result = _run(tiny_experiment, *TWO_SEEDS, *QUICK_PARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained" not in result.stdout and "spread" not in result.stdout
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    assert f"0 of {len(rows)} rows to compute" in result.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.parent.name != tiny_experiment.name)


def test_the_run_says_how_many_rows_it_computes_and_counts_them_in_one_progress_line(tiny_experiment):
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    lines = (tiny_experiment / "stdout.txt").read_text().splitlines()
    assert f"{len(rows)} of {len(rows)} rows to compute" in lines  # a first run: nothing cached
    done = [int(re.search(r"\] .*: (\d+) of (\d+) rows done", line).group(1)) for line in lines if "rows done" in line]
    assert len(done) >= len(rows) and done == sorted(done) and done[-1] == len(rows)
    assert any("min left" in line for line in lines)
    assert "%|" not in (tiny_experiment / "stderr.txt").read_text()  # no sampling or training bars beside it


def test_a_finished_run_whose_rows_folder_is_gone_rewrites_its_report_without_computing_a_row(tiny_experiment, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(tiny_experiment, out, ignore=shutil.ignore_patterns("rows", "models"))
    result = _run(out, *TWO_SEEDS, *QUICK_PARTS)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert f"0 of {len(rows)} rows to compute" in result.stdout and "guidance_grid.png not redrawn" in result.stdout


@pytest.mark.slow
def test_ideal_rows_at_the_shapes16_preset_squeeze_the_baseline_and_not_the_fix(tmp_path):
    result = _run_preset("shapes16", tmp_path, "--ideal-only")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    for steps in (25, 100):
        assert rows[f"ideal_baseline_leading_{steps}"]["spread_ratio"] < 0.75
        assert rows[f"ideal_fixed_trailing_{steps}"]["spread_ratio"] > 0.83
        assert rows[f"ideal_fixed_trailing_{steps}"]["frac_dark"] > rows[f"ideal_baseline_leading_{steps}"]["frac_dark"]


@pytest.mark.slow
def test_experiment_runs_on_an_image_folder_with_the_reference_held_out(tmp_path):
    folder = write_image_folder(tmp_path / "images", classes=("dark", "light"), per_class=12, size=(20, 20))
    out = tmp_path / "out"
    result = _run(out, "--dataset", "folder", "--data-dir", str(folder), "--image-size", "16")
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["preset"]["dataset"] == "folder" and results["preset"]["image_size"] == 16
    assert results["preset"]["num_samples"] == 12  # half of the 24 images, never seen by a model
    assert {"ideal", "trained", "guidance"} <= {r["kind"] for r in results["rows"]}
    assert "12 held out as the reference" in result.stdout


def test_experiment_refuses_an_image_size_its_unet_cannot_take(tmp_path):
    result = _run(tmp_path, "--image-size", "17")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "multiple of" in result.stderr


def test_steps_sweep_covers_every_spacing_and_step_count_for_ideal_and_trained_models(tiny_experiment):
    rows = [r for r in json.loads((tiny_experiment / "results.json").read_text())["rows"] if r["kind"] == "steps"]
    cells = {(r["model"], r["spacing"], r["steps"]) for r in rows}
    assert cells == {(m, sp, st) for m in ("ideal_baseline", "ideal_fixed", "ideal_flow", "baseline", "fixed", "flow")
                     for sp in ("leading", "linspace", "trailing") for st in (1, 3)}
    assert all("class_accuracy" in r["quality"] for r in rows if not r["model"].startswith("ideal"))
    assert (tiny_experiment / "steps.png").is_file()


def test_guidance_grid_has_a_cell_per_guided_weight_and_rescale_and_one_unguided_cell(tiny_experiment):
    rows = [r for r in json.loads((tiny_experiment / "results.json").read_text())["rows"] if r["kind"] == "guidance_grid"]
    # w = 1 is the conditional model alone: a rescale cannot change it, so it is drawn once
    for seed in (0, 1):
        assert sorted((r["guidance"], r["rescale"]) for r in rows if r["seed"] == seed) == [(1, 0), (4, 0), (4, 0.7)]
    assert all(0 <= r["clip_fraction"] <= 1 and r["contrast_ratio"] > 0 for r in rows)
    assert (tiny_experiment / "guidance.png").is_file() and (tiny_experiment / "guidance_grid.png").is_file()


@pytest.mark.slow
def test_finetune_rows_pair_a_fine_tuned_baseline_with_the_fixed_model_at_equal_total_steps(experiment_with_every_part):
    tiny_experiment = experiment_with_every_part
    rows = [r for r in json.loads((tiny_experiment / "results.json").read_text())["rows"] if r["kind"] == "finetune"]
    assert sorted((r["model"], r["total_steps"]) for r in rows if r["seed"] == 0) == \
        [("finetuned", 6), ("finetuned", 8), ("scratch", 6), ("scratch", 8)]
    source = torch.load(tiny_experiment / "models" / "finetune_2" / "checkpoint.pt", weights_only=True)
    assert source["step"] == 2 and source["config"]["init_from"].endswith("baseline/checkpoint.pt")


@pytest.mark.slow
def test_a_longer_fine_tuning_or_scratch_run_continues_the_shorter_one(experiment_with_every_part):
    models = experiment_with_every_part / "models"
    for shorter, longer, step in (("finetune_2", "finetune_4", 2), ("scratch_6", "scratch_8", 6), ("fixed", "scratch_6", 4)):
        lines = (models / shorter / "metrics.jsonl").read_text().splitlines()
        assert (models / longer / "metrics.jsonl").read_text().splitlines()[:len(lines)] == lines  # its first steps, copied
        state = torch.load(models / longer / "checkpoint.pt", weights_only=True)
        assert json.loads(lines[-1])["step"] == step < state["step"] == int(longer.split("_")[1])


def test_offset_noise_rows_are_sampled_both_from_plain_noise_and_from_the_offset_they_were_trained_on(tiny_experiment):
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    offsets = {r["name"]: r["x_T_offset"] for r in rows if "offset_noise" in r["name"] and r["kind"] in ("ideal", "trained")}
    assert offsets["offset_noise_leading_5"] == 0 and offsets["offset_noise_matched_leading_5"] == 0.1
    assert offsets["ideal_offset_noise_matched_trailing_5"] == 0.1


def test_first_step_of_the_fixed_model_is_measured_per_class_and_for_the_ideal_denoiser(tiny_experiment):
    rows = [r for r in json.loads((tiny_experiment / "results.json").read_text())["rows"] if r["kind"] == "first_step"]
    assert [r["label"] for r in rows if r["seed"] == 0] == [0, 1, 2, 3, None]
    assert rows[-1]["model"] == "ideal_fixed" and rows[-1]["rms_to_class_mean"] < 1e-4  # the ideal denoiser gives exactly the data mean at zero SNR


def test_every_claim_part_runs_at_every_training_seed(tiny_experiment):
    rows = json.loads((tiny_experiment / "results.json").read_text())["rows"]
    for kind in ("trained", "steps", "guidance_grid", "first_step", "leak", "leak_first", "first_step_gain"):
        trained = [r for r in rows if r["kind"] == kind and not r["model"].startswith("ideal")]
        assert {r["seed"] for r in trained} == {0, 1}, kind


def test_trained_rows_are_summarised_as_mean_and_std_over_seeds(tiny_experiment):
    results = json.loads((tiny_experiment / "results.json").read_text())
    entry = next(e for e in results["over_seeds"] if e["kind"] == "guidance_grid" and e["guidance"] == 4 and e["rescale"] == 0)
    rows = [r for r in results["rows"] if r["key"] in entry["rows"]]
    assert entry["seeds"] == 2 and sorted(r["seed"] for r in rows) == [0, 1]
    assert entry["clip_fraction"]["mean"] == pytest.approx(sum(r["clip_fraction"] for r in rows) / 2)
    assert entry["yardstick.class_accuracy"]["std"] >= 0
    spread = entry["spread_ratio"]
    assert f"| 4 | 0 | 2 | {spread['mean']:.2f} ± {spread['std']:.2f} |" in (tiny_experiment / "RESULTS.md").read_text()


def test_rectified_flow_has_a_trained_row_an_exact_denoiser_row_and_a_steps_sweep(tiny_experiment):
    names = {r["name"] for r in json.loads((tiny_experiment / "results.json").read_text())["rows"]}
    assert {"flow_trailing_5", "flow_leading_5_seed1", "ideal_flow_trailing_5", "steps_flow_linspace_3_seed1",
            "steps_ideal_flow_leading_1"} <= names


def test_leak_part_gives_every_model_a_correlation_and_a_dose_response_over_every_shift(tiny_experiment):
    from experiments.claims import LEAK_IDEAL, LEAK_MODELS, LEAK_SHIFTS

    leak = {e["model"]: e for e in json.loads((tiny_experiment / "results.json").read_text())["leak"]}
    assert set(leak) == set(LEAK_IDEAL) | set(LEAK_MODELS)
    assert all(e["deltas"] == list(LEAK_SHIFTS) and -1 <= e["r"]["mean"] <= 1 for e in leak.values())
    assert leak["flow"]["seeds"] == 2 and leak["ideal_flow"]["seeds"] == 1
    # the leak itself: the exact x̂0 at t = T is the data mean whatever x_T is at zero SNR, not on the flawed schedule
    assert leak["ideal_fixed"]["r_first"]["mean"] == 0 == leak["ideal_flow"]["r_first"]["mean"]
    assert leak["ideal_baseline"]["r_first"]["mean"] > 0.3
    assert "The sampler's map from noise to image" in (tiny_experiment / "RESULTS.md").read_text()


def test_the_experiments_flags_are_a_dataclass_whose_values_choose_the_preset_and_its_data():
    from cli import UsageError
    from experiments.brightness import parse_args

    config, preset = parse_args(["--preset", "smoke", "--parts", "table", "leak", "--image-size", "8"])
    assert config.parts == ("table", "leak") and not config.ideal_only
    assert (preset.model, preset.image_size, preset.dataset) == ("tiny", 8, "shapes")
    with pytest.raises(UsageError, match="--seeds must be at least 1, got 0"):
        parse_args(["--seeds", "0"])


@pytest.mark.slow
def test_the_finetune_and_quality_parts_run_at_every_training_seed(experiment_with_every_part):
    rows = json.loads((experiment_with_every_part / "results.json").read_text())["rows"]
    for kind in ("finetune", "quality"):
        assert {r["seed"] for r in rows if r["kind"] == kind} == {0, 1}, kind


def test_leak_part_measures_each_models_first_step_gain_beside_the_exact_denoisers_prediction(tiny_experiment):
    leak = {e["model"]: e for e in json.loads((tiny_experiment / "results.json").read_text())["leak"]}
    assert all(e["gain_low"] <= e["gain"]["mean"] <= e["gain_high"] for e in leak.values() if e["seeds"] == 1)
    assert leak["ideal_fixed"]["predicted_gain"] == 0 == leak["ideal_flow"]["predicted_gain"]
    assert leak["ideal_baseline"]["predicted_gain"] > 0 and leak["ideal_baseline"]["gain"]["mean"] > 0
    assert "slope of x̂0's mean on x_T's" in (tiny_experiment / "RESULTS.md").read_text()


def test_the_leak_part_predicts_the_flawed_schedules_squeeze_from_the_data_and_none_at_zero_snr(tiny_experiment):
    leak = {e["model"]: e for e in json.loads((tiny_experiment / "results.json").read_text())["leak"]}
    assert 0 < leak["ideal_baseline"]["predicted_squeeze"] < 1 and 0 < leak["ideal_baseline"]["leak_only_spread"] < 1
    assert leak["ideal_fixed"]["predicted_squeeze"] == 1 and leak["ideal_fixed"]["leak_only_spread"] == 0
    summary = (tiny_experiment / "SUMMARY.md").read_text()
    assert f"from pure noise is {leak['ideal_baseline']['predicted_squeeze']:.2f} of its std in training" in summary


def test_a_leak_put_back_at_sampling_time_moves_the_flawed_schedule_and_leaves_zero_snr_untouched(tiny_experiment):
    leak = {e["model"]: e for e in json.loads((tiny_experiment / "results.json").read_text())["leak"]}
    for zero_snr in ("ideal_fixed", "ideal_flow", "fixed", "flow"):  # ᾱ_T = 0: x_T is the same noise, bit for bit
        for kind in ("leak_intervention", "leak_everaert"):
            assert leak[zero_snr][f"{kind}.spread_ratio"]["mean"] == leak[zero_snr]["spread_ratio"]["mean"]
    flawed = leak["ideal_baseline"]  # a held-out image's leak widens the spread, and the sample follows that image
    assert flawed["leak_intervention.spread_ratio"]["mean"] > flawed["spread_ratio"]["mean"] + 0.1
    assert flawed["leak_intervention.r_x0"]["mean"] > 0.3
    assert flawed["leak_everaert.spread_ratio"]["mean"] > flawed["spread_ratio"]["mean"]
