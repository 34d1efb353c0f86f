import json
import subprocess
import sys

import pytest

from experiments.schedules import PAPER_TABLE_1, first_step_spread, terminal_values
from tests.conftest import ROOT


@pytest.mark.parametrize("name", PAPER_TABLE_1)
def test_table_1_reproduces_the_papers_terminal_values(name):
    row = next(r for r in terminal_values() if r["schedule"] == name and not r["zero_snr"])
    assert row["sqrt_alpha_bar_T"] == pytest.approx(row["paper_sqrt_alpha_bar_T"], rel=1e-4)
    assert row["snr_T"] == pytest.approx(row["paper_snr_T"], rel=1e-4)


def test_table_1_fixed_schedules_end_at_exactly_zero():
    assert all(r["sqrt_alpha_bar_T"] == 0 and r["snr_T"] == 0 for r in terminal_values() if r["zero_snr"])


def test_leak_only_spread_is_zero_at_zero_snr_and_narrows_with_more_pixels():
    assert first_step_spread(0.0, 0.58, 768) == 0
    spreads = [first_step_spread(0.085, 0.58, 3 * size * size) for size in (16, 32, 64)]
    assert spreads[0] > spreads[1] > spreads[2]


def test_schedules_experiment_writes_table_figure_data_and_resolution_rows(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.schedules", "--out", str(tmp_path), "--sizes", "8", "16",
                             "--num-samples", "16", "--num-known", "16", "--steps", "5"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["table_1"]) == 6
    assert [(r["size"], r["row"]) for r in results["resolution"]] == [
        (8, "baseline_leading"), (8, "fixed_trailing"), (16, "baseline_leading"), (16, "fixed_trailing")]
    assert "| scaled_linear | no | 0.0682649 |" in (tmp_path / "RESULTS.md").read_text()
