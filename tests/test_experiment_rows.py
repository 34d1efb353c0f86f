"""What the experiments share: a row's name, its results file, and the train.py runs behind the rows."""
import json
import subprocess
import sys

import pytest
import torch

from experiments.common import Results, Row, continue_run, mean_std, side_by_side, train, train_flags
from tests.conftest import ROOT, TINY, run_script


def test_rows_that_differ_in_any_setting_have_different_names():
    base = Row("guidance_grid", "fixed", "trailing", 25)
    others = [Row("steps", "fixed", "trailing", 25), Row("guidance_grid", "v_only", "trailing", 25),
              Row("guidance_grid", "fixed", "leading", 25), Row("guidance_grid", "fixed", "trailing", 50),
              Row("guidance_grid", "fixed", "trailing", 25, seed=1), Row("guidance_grid", "fixed", "trailing", 25, guidance=4),
              Row("guidance_grid", "fixed", "trailing", 25, rescale=0.7), Row("guidance_grid", "fixed", "trailing", 25, x_T_offset=0.1),
              Row("guidance_grid", "fixed", "trailing", 25, finetune_steps=100), Row("guidance_grid", "fixed", "trailing", 25, label=0)]
    assert len({r.name for r in [base, *others]}) == len(others) + 1
    assert Row("steps", "fixed", "trailing", 5, seed=1, guidance=4).name == "steps_fixed_trailing_5_w4_seed1"


def test_a_row_is_computed_once_and_read_back_from_its_results_file(tmp_path):
    calls = []
    row = Row("ideal", "ideal_fixed", "trailing", 25)
    first = Results(tmp_path / "rows.jsonl").get(row, lambda: calls.append(1) or {"spread_ratio": 0.9})
    again = Results(tmp_path / "rows.jsonl").get(row, lambda: calls.append(1) or {"spread_ratio": 0.1})
    assert calls == [1] and again == first and first["spread_ratio"] == 0.9


def test_a_row_cut_off_while_it_was_written_is_computed_again(tmp_path):
    path = tmp_path / "rows.jsonl"
    Results(path).get(Row("ideal", "ideal_fixed"), lambda: {"value": 1})
    path.write_text(path.read_text() + '{"name": "ideal_fixed_lea')  # a run killed mid-line
    results = Results(path)
    assert list(results.rows) == ["ideal_fixed"]
    assert results.get(Row("ideal", "ideal_fixed", "leading"), lambda: {"value": 2})["value"] == 2


def test_mean_and_std_over_seeds_or_the_value_alone_for_one_seed():
    assert mean_std([0.5, 0.7]) == "0.60 ± 0.14"
    assert mean_std([0.5]) == "0.50"


def test_a_bool_setting_becomes_flag_or_no_flag():
    assert train_flags({"zero_snr": False, "prediction": "eps", "detail_skip": True}) == [
        "--no-zero-snr", "--prediction", "eps", "--detail-skip"]


def test_training_jobs_run_side_by_side_on_one_thread_each_on_a_cpu_and_in_turn_on_a_gpu():
    threads = []
    side_by_side([threads.append, threads.append], torch.device("cpu"))
    assert threads == [1, 1]
    threads.clear()
    side_by_side([threads.append, threads.append], torch.device("cuda"))
    assert threads == [None, None]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "source"
    result = run_script("train.py", *TINY, "--steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_a_run_that_stopped_early_is_not_taken_for_finished(two_step_run, monkeypatch):
    monkeypatch.setattr("experiments.common.subprocess.run", lambda command, **kw: subprocess.CompletedProcess(command, 0))
    with pytest.raises(SystemExit, match="source stopped at step 2 of 4; rerun to resume it"):
        train(two_step_run, {"steps": 4})  # train.py exits 0 when Ctrl-C stops it early


def test_a_failed_run_names_its_log(tmp_path):
    with pytest.raises(SystemExit, match="train.py failed.*bad.log"):
        train(tmp_path / "bad", {"steps": 2, "model": "tiny", "image_size": 7})


def test_a_continued_run_is_a_copy_of_the_source_trained_on(two_step_run, tmp_path):
    (tmp_path / "copy.copying").mkdir()  # a copy killed before it was whole
    model, state = continue_run(two_step_run, tmp_path / "copy", 3)
    assert state["step"] == 3 and not (tmp_path / "copy.copying").exists()
    source_rows = (two_step_run / "metrics.jsonl").read_text().splitlines()
    assert (tmp_path / "copy" / "metrics.jsonl").read_text().splitlines()[:len(source_rows)] == source_rows
    assert json.loads((tmp_path / "copy" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_an_image_size_the_unet_cannot_take_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.brightness", "--out", str(tmp_path / "out"), "--work",
                             str(tmp_path / "work"), "--preset", "smoke", "--image-size", "9"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--image-size 9" in result.stderr
