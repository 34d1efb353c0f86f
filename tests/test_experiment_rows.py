"""A row of the brightness experiment is declared once, as a `Row`: its name, its cache file and its group over
training seeds all come from its fields."""
import json
import subprocess
import threading
from dataclasses import replace

import pytest
import torch

from data import make_shapes
from experiments.brightness import over_seeds, table_rows, trained_rows
from experiments.claims import continued
from experiments.common import (EXPERIMENT_PRESETS, MODELS, Progress, Row, Setup, cached, finished_rows, side_by_side, train_models,
                                train_run, train_settings, trained_otherwise)
from models import PRESETS
from tests.conftest import TINY, run_script


@pytest.fixture
def setup(tmp_path) -> Setup:
    for sub in ("rows", "grids", "models"):
        (tmp_path / sub).mkdir()
    data = make_shapes(16, 16, 1)[0]
    return Setup(tmp_path, replace(EXPERIMENT_PRESETS["smoke"], num_samples=16), data, None, make_shapes(64, 16, 2)[0],
                 torch.device("cpu"))


def counting():
    calls = []
    return calls, lambda: calls.append(1) or {"value": len(calls)}


def test_a_cached_row_is_read_back_while_its_settings_stay_the_same(setup):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    assert cached(setup, row, make) == cached(setup, row, make)
    assert len(calls) == 1


def test_a_row_of_a_finished_runs_results_is_read_back_when_its_rows_folder_is_gone(setup):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    first = cached(setup, row, make)
    (setup.out / "results.json").write_text(json.dumps({"rows": [first]}))
    for path in (setup.out / "rows").iterdir():
        path.unlink()
    setup.finished = finished_rows(setup.out)
    assert cached(setup, row, make) == first and len(calls) == 1
    assert cached(setup, Row("trained", "fixed", "leading", 5), make) != first and len(calls) == 2


def test_changing_a_rows_own_setting_computes_it_anew(setup):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    cached(setup, row, make)
    assert cached(setup, replace(row, rescale=0.7), make)["value"] == 2


def test_changing_the_training_settings_of_a_rows_model_computes_it_anew(setup, monkeypatch):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    cached(setup, row, make)
    monkeypatch.setitem(MODELS, "fixed", dict(zero_snr=True, prediction="x0"))
    assert cached(setup, row, make)["value"] == 2


def test_changing_the_presets_budget_computes_a_row_anew(setup):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    cached(setup, row, make)
    setup.p = replace(setup.p, train_steps=setup.p.train_steps + 1)
    assert cached(setup, row, make)["value"] == 2


def test_a_rows_name_spells_its_settings_and_its_cache_file_adds_their_digest(setup):
    row = Row("guidance_grid", "fixed", "trailing", 25, seed=1, guidance=4, rescale=0.7)
    assert row.name == "guidance_grid_fixed_trailing_25_w4_phi0.7_seed1"
    assert row.key(setup.p).startswith(row.name + "-") and row.key(setup.p) != replace(row, sampler="dpmpp-2m").key(setup.p)
    assert Row("trained", "offset_noise", "leading", 25, x_T_offset=MODELS["offset_noise"]["offset_noise"]).name \
        == "offset_noise_matched_leading_25"


def test_rows_that_differ_in_any_setting_but_the_seed_are_never_averaged_together():
    numbers = {"spread_ratio": 1.0, "w1": 0.0, "hf_ratio": 1.0, "frac_dark": 0.0, "frac_bright": 0.0}
    rows = [{**Row("steps", "fixed", "trailing", 5, seed, **change).__dict__, "key": str(i), **numbers}
            for i, (seed, change) in enumerate([(0, {}), (1, {}), (0, {"eta": 1.0}), (0, {"sampler": "dpmpp-2m"})])]
    groups = over_seeds(rows)
    assert sorted(e["seeds"] for e in groups) == [1, 1, 2]


def test_experiment_presets_are_not_named_like_unet_presets():
    assert not set(EXPERIMENT_PRESETS) & set(PRESETS)
    assert all(p.model in PRESETS for p in EXPERIMENT_PRESETS.values())


def test_a_trained_row_with_a_new_schedule_and_loss_space_is_one_declaration(setup, monkeypatch):
    for name in list(MODELS):
        monkeypatch.delitem(MODELS, name)
    monkeypatch.setitem(MODELS, "linear_x0_v_loss", dict(schedule="linear", prediction="x0", loss_space="v"))  # the declaration
    rows = trained_rows(setup, table_rows(setup, seeds=1))
    assert {(r["model"], r["spacing"]) for r in rows} == {("linear_x0_v_loss", "leading"), ("linear_x0_v_loss", "trailing")}
    config = torch.load(setup.out / "models" / "linear_x0_v_loss" / "checkpoint.pt", weights_only=True)["config"]
    assert (config["schedule"], config["prediction"], config["loss_space"], config["zero_snr"]) == ("linear", "x0", "v", True)
    assert all(json.loads((setup.out / "rows" / f"{r['key']}.json").read_text())["model"] == "linear_x0_v_loss" for r in rows)


def test_a_rows_cache_file_does_not_depend_on_how_a_number_is_written(setup):
    assert Row("guidance_grid", "fixed", "trailing", 25, guidance=4).key(setup.p) == \
        Row("guidance_grid", "fixed", "trailing", 25, guidance=4.0).key(setup.p)


def test_another_reference_split_computes_a_row_anew(setup):
    calls, make = counting()
    row = Row("trained", "fixed", "trailing", 5)
    cached(setup, row, make)
    setup.split_seed = 1
    assert cached(setup, row, make)["value"] == 2


def test_a_model_trained_with_other_settings_is_trained_anew(setup, monkeypatch):
    for name in list(MODELS):
        monkeypatch.delitem(MODELS, name)
    monkeypatch.setitem(MODELS, "m", dict(prediction="x0"))
    trained_rows(setup, table_rows(setup, seeds=1))
    setup.models.clear()  # a later invocation, which finds the model on disk
    monkeypatch.setitem(MODELS, "m", dict(prediction="v"))
    trained_rows(setup, table_rows(setup, seeds=1))
    config = torch.load(setup.out / "models" / "m" / "checkpoint.pt", weights_only=True)["config"]
    assert config["prediction"] == "v" and config["hold_out_seed"] == setup.split_seed


def test_training_jobs_run_side_by_side_on_one_cpu_thread_each(setup, monkeypatch):
    monkeypatch.setattr("experiments.common.usable_cores", lambda: 2)
    together, calls = threading.Barrier(2, timeout=10), []

    def job(i: int, threads: int | None) -> None:
        together.wait()  # in turn, the first would wait alone and fail
        calls.append((i, threads))

    side_by_side(setup, [lambda threads, i=i: job(i, threads) for i in range(4)])
    assert sorted(calls) == [(0, 1), (1, 1), (2, 1), (3, 1)]


def test_training_jobs_run_one_after_another_with_torchs_threads_on_a_gpu(setup, monkeypatch):
    monkeypatch.setattr("experiments.common.usable_cores", lambda: 16)
    calls = []
    side_by_side(replace(setup, device=torch.device("cuda")), [lambda threads, i=i: calls.append((i, threads)) for i in range(3)])
    assert calls == [(0, None), (1, None), (2, None)]


def test_a_training_run_is_given_its_cpu_threads(tmp_path, monkeypatch):
    seen = {}

    def failing_run(command, cwd, env, **output):
        seen["env"] = env
        return subprocess.CompletedProcess(command, 2)

    monkeypatch.setattr("experiments.common.subprocess.run", failing_run)
    with pytest.raises(SystemExit):
        train_run(tmp_path / "run", {"steps": 2}, 2, threads=1)
    assert seen["env"]["OMP_NUM_THREADS"] == "1"


def test_a_training_runs_progress_goes_to_a_log_of_its_own_and_its_last_line_says_why_it_failed(tmp_path, monkeypatch):
    def failing_run(command, cwd, env, stdout, stderr):
        stdout.write("train:  50%|#####     | 1/2\nerror: --lr must be positive, got 0\n")
        return subprocess.CompletedProcess(command, 2)

    monkeypatch.setattr("experiments.common.subprocess.run", failing_run)
    with pytest.raises(SystemExit, match="^run: error: --lr must be positive, got 0$"):
        train_run(tmp_path / "run", {"steps": 2}, 2)
    assert "train:  50%" in (tmp_path / "run.log").read_text()


def test_only_the_models_of_rows_not_yet_cached_are_trained(setup, monkeypatch):
    trained = []
    monkeypatch.setattr("experiments.common.trained_model", lambda s, name, seed, threads: trained.append((name, seed)))
    rows = table_rows(setup, seeds=2)
    for row in rows[1:]:
        cached(setup, row, lambda: {"value": 1})
    train_models(setup, rows)
    assert trained == [(rows[0].model, rows[0].seed)]
    cached(setup, rows[0], lambda: {"value": 1})
    train_models(setup, rows)  # every row cached: a deleted models/ folder is not trained again
    assert trained == [(rows[0].model, rows[0].seed)]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    """A finished 2-step train.py run with a constant rate."""
    out = tmp_path_factory.mktemp("runs") / "source"
    result = run_script("train.py", *TINY, "--steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_a_training_run_that_stopped_early_is_not_taken_for_finished(two_step_run, monkeypatch):
    monkeypatch.setattr("experiments.common.subprocess.run", lambda command, cwd, env, **output: subprocess.CompletedProcess(command, 0))
    with pytest.raises(SystemExit, match="source stopped at step 2 of 4; rerun to resume it"):
        train_run(two_step_run, {}, 4)  # train.py exits 0 when Ctrl-C stops it early


def test_a_continued_copy_without_a_checkpoint_is_copied_again(two_step_run, tmp_path):
    (tmp_path / "copy").mkdir()  # a copy killed before it was finished
    model, state = continued(two_step_run, tmp_path / "copy", 2)
    assert state["step"] == 2 and (tmp_path / "copy" / "checkpoint.pt").is_file()
    assert not (tmp_path / "copy.copying").exists()


def two_seeds_of_one_row(own_spread: tuple[float, float], yardstick_spread: tuple[float, float]) -> list[dict]:
    """The fixed model's trailing row at two training seeds, whose own spread and the yardstick's differ."""
    numbers = {"mean": 0.5, "std": 0.2, "w1": 0.03, "hf_ratio": 1.2, "frac_dark": 0.06, "frac_bright": 0.06,
               "clip_fraction": 0.0, "contrast_ratio": 1.0, "brightness": [0.5]}
    return [{**Row("trained", "fixed", "trailing", 25, seed).__dict__, "name": f"fixed_trailing_25_seed{seed}",
             "key": f"k{seed}", **numbers, "spread_ratio": own,
             "quality": {"spread_ratio": theirs, "w1": 0.5, "hf_ratio": 9.0, "fd_ratio": 3.0, "class_accuracy": 0.8}}
            for seed, own, theirs in zip((0, 1), own_spread, yardstick_spread)]


def test_a_groups_numbers_are_its_rows_own_and_the_yardsticks_keep_their_own_names():
    (entry,) = over_seeds(two_seeds_of_one_row((0.90, 0.92), (0.40, 0.42)))
    assert entry["spread_ratio"]["mean"] == pytest.approx(0.91) and entry["w1"]["mean"] == pytest.approx(0.03)
    assert entry["yardstick.spread_ratio"]["mean"] == pytest.approx(0.41)
    assert entry["yardstick.fd_ratio"]["mean"] == pytest.approx(3.0)


def test_the_report_and_the_readme_headline_show_a_rows_own_spread_not_the_yardsticks(tmp_path):
    from dataclasses import asdict

    from experiments.brightness import rewrite_report
    from experiments.summary import headline

    data = {"name": "data", "kind": "data", "mean": 0.5, "std": 0.25, "frac_dark": 0.09, "frac_bright": 0.09,
            "spread_ratio": 1.0, "w1": 0.0, "hf_ratio": 1.0, "clip_fraction": 0.0, "brightness": [0.5]}
    results = {"preset": asdict(replace(EXPERIMENT_PRESETS["smoke"], step_counts=(25,))), "command": "test",
               "seconds": 1.0, "data": data, "rows": two_seeds_of_one_row((0.90, 0.92), (0.40, 0.42))}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rewrite_report(tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    for page in (tmp_path / "RESULTS.md").read_text(), (tmp_path / "SUMMARY.md").read_text(), headline(written):
        assert ("0.91 ± 0.01" in page or "0.910 ± 0.014" in page) and "0.41" not in page


def test_a_patch_unets_rows_and_models_know_whether_it_has_the_detail_skip(setup, monkeypatch):
    shapes32, fixed = EXPERIMENT_PRESETS["shapes32"], Row("trained", "fixed", "trailing", 25)
    with_skip = fixed.key(shapes32)
    monkeypatch.setattr("experiments.common.detail_skip", lambda unet, settings: False)
    assert fixed.key(shapes32) != with_skip
    monkeypatch.undo()
    assert train_settings(replace(setup, p=shapes32), MODELS["fixed"], 0, 10)["detail_skip"] is True
    assert train_settings(setup, MODELS["fixed"], 0, 10)["detail_skip"] is False  # the tiny UNet folds no patches
    assert trained_otherwise({"config": {"model": "cpu"}}, {"model": "cpu", "detail_skip": True})
    assert not trained_otherwise({"config": {"model": "tiny"}}, {"model": "tiny", "detail_skip": False})


def test_the_progress_line_estimates_the_time_left_from_the_rows_computed_so_far(monkeypatch):
    progress = Progress(total=10, to_compute=6, part="part 2 of 3, steps", done=6, computed=2, tic=0.0)
    monkeypatch.setattr("experiments.common.time.perf_counter", lambda: 120.0)  # 2 min for 2 rows: 1 min a row
    assert progress.line() == "[2 min] part 2 of 3, steps: 6 of 10 rows done, about 4 min left"
    progress.computed = 6
    assert progress.line() == "[2 min] part 2 of 3, steps: 6 of 10 rows done"


def test_a_row_read_back_counts_as_done_but_not_as_computed(setup):
    row = Row("trained", "fixed", "trailing", 5)
    cached(setup, row, lambda: {"value": 1})
    cached(setup, row, lambda: {"value": 2})
    assert (setup.progress.done, setup.progress.computed) == (2, 1)


def test_the_table_part_trains_all_its_models_side_by_side_before_its_first_row(setup, monkeypatch):
    events = []
    monkeypatch.setattr("experiments.brightness.train_models", lambda s, rows: events.append(("train", len(rows))))
    monkeypatch.setattr("experiments.brightness.run_row", lambda s, row, labels=None: events.append(("row", row.model)))
    rows = table_rows(setup, seeds=2)
    trained_rows(setup, rows)
    assert events[0] == ("train", len(rows)) and len(events) == len(rows) + 1


def one_resolution(px: int, x_T_ratio: float, leak_only: float, ideal_spread: float, trained_spread: float) -> dict:
    """Results of the leak part at one resolution, as over_seeds and leak_summary write them (one seed)."""
    return {"preset": {"image_size": px}, "leak": [
        {"model": "ideal_baseline", "seeds": 1, "predicted_squeeze": x_T_ratio, "leak_only_spread": leak_only,
         "spread_ratio": {"mean": ideal_spread, "std": 0.0}},
        {"model": "baseline", "seeds": 1, "spread_ratio": {"mean": trained_spread, "std": 0.0}}]}


def test_the_squeeze_by_resolution_sets_the_predicted_beside_the_measured_at_each_size():
    from experiments.summary import squeeze_by_resolution

    (sentence,) = squeeze_by_resolution([one_resolution(32, 0.34, 0.20, 0.49, 0.46), one_resolution(16, 0.68, 0.50, 0.75, 0.82)])
    assert "At 16 / 32 px" in sentence and "0.68 / 0.34" in sentence and "0.50 / 0.20" in sentence  # by size, any order given
    assert "0.75 / 0.49 (ideal denoiser)" in sentence and "0.82 / 0.46 (trained baseline)" in sentence
    assert "the squeeze grows with resolution, as the prediction says" in sentence


def test_the_squeeze_by_resolution_says_so_when_the_measured_squeeze_does_not_grow_as_predicted():
    from experiments.summary import squeeze_by_resolution

    (sentence,) = squeeze_by_resolution([one_resolution(16, 0.68, 0.50, 0.75, 0.82), one_resolution(32, 0.34, 0.20, 0.80, 0.46)])
    assert sentence.endswith("the measured squeeze does not follow the prediction across resolutions.")


def test_the_squeeze_by_resolution_says_nothing_of_a_single_resolution():
    from experiments.summary import squeeze_by_resolution

    assert squeeze_by_resolution([one_resolution(16, 0.68, 0.50, 0.75, 0.82)]) == []
