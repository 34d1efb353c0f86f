import json
import subprocess
import sys

import pytest

from data import make_shapes
from evaluation.metrics import leak_prediction
from experiments.schedules import PAPER_TABLE_1, terminal_values
from tests.conftest import ROOT


@pytest.mark.parametrize("name", PAPER_TABLE_1)
def test_table_1_reproduces_the_papers_terminal_values(name):
    row = next(r for r in terminal_values() if r["schedule"] == name and not r["zero_snr"])
    assert row["sqrt_alpha_bar_T"] == pytest.approx(row["paper_sqrt_alpha_bar_T"], rel=1e-4)
    assert row["snr_T"] == pytest.approx(row["paper_snr_T"], rel=1e-4)


def test_table_1_fixed_schedules_end_at_exactly_zero():
    assert all(r["sqrt_alpha_bar_T"] == 0 and r["snr_T"] == 0 for r in terminal_values() if r["zero_snr"])


def test_the_leak_grows_with_resolution_as_predicted_from_the_data_alone():
    predicted = [leak_prediction(make_shapes(512, size, 0)[0], 0.068**2) for size in (16, 32, 64)]
    assert predicted[0]["signal_share"] < predicted[1]["signal_share"] < predicted[2]["signal_share"]
    assert predicted[0]["x_T_std_ratio"] > predicted[1]["x_T_std_ratio"] > predicted[2]["x_T_std_ratio"]
    assert leak_prediction(make_shapes(512, 16, 0)[0], 0.0)["leak_only_spread"] == 0


def test_schedules_experiment_writes_table_figure_data_and_resolution_rows(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.schedules", "--out", str(tmp_path), "--sizes", "8", "16",
                             "--num-samples", "16", "--num-known", "16", "--steps", "5"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["table_1"]) == 6
    assert [(r["size"], r["row"]) for r in results["resolution"]] == [
        (8, "baseline_leading"), (8, "fixed_trailing"), (16, "baseline_leading"), (16, "fixed_trailing")]
    assert "| scaled_linear | 0.0682649 | 0.00468192 | 0.068265 | 0.004682 | 0, 0 |" in result.stdout
