"""experiments.recipe's tables, with known answers."""
from experiments.recipe import spans, table, tried_table

METRICS = {"class_accuracy": 0.7, "fd_ratio": 10.0, "spectrum_max": 2.0, "spectrum_min": 0.5, "chroma_ratio": 1.0,
           "spread_ratio": 0.9, "w1": 0.02}


def row(arm: str, train_seed: int, seed: int, **changed) -> dict:
    return {"arm": arm, "train_flags": "--x", "train_seed": train_seed, "seed": seed, "wall_s": 540.0, **METRICS,
            **changed}


def test_an_arms_span_runs_from_its_lowest_to_its_highest_training_seed_mean_and_is_one_number_where_they_agree():
    rows = [row("a", 0, 0, fd_ratio=10.0), row("a", 0, 1, fd_ratio=12.0), row("a", 1, 0, fd_ratio=20.0),
            row("a", 1, 1, fd_ratio=30.0), row("b", 0, 0, fd_ratio=99.0)]
    assert spans(rows, "a").startswith("2 training × 2 sampling seeds: feature distance ratio 11.0-25.0, highest band 2.00,")


def test_the_table_has_a_line_per_arm_and_training_seed_with_the_mean_over_sampling_seeds():
    rows = [row("a", 0, 0, fd_ratio=10.0), row("a", 0, 1, fd_ratio=12.0), row("a", 1, 0), row("b", 0, 0)]
    lines = table(rows).splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| a", "| a", "| b"]
    assert "| 11.0 ± 1.4 |" in lines[0]


def test_the_table_gives_each_runs_logged_minutes_and_its_number_of_sampling_seeds():
    rows = [row("a", 0, 0, wall_s=600.0), row("a", 0, 1, wall_s=600.0), row("b", 0, 0, wall_s=750.0)]
    lines = table(rows).splitlines()[2:]
    assert "| 0 | 10.0 | 2 |" in lines[0] and "| 0 | 12.5 | 1 |" in lines[1]


def test_a_tried_row_with_an_arm_takes_its_numbers_from_the_results_and_the_others_keep_theirs():
    tried = {"rows": [{"change": "c1", "flag": "--x", "arm": "a", "verdict": "v1"},
                      {"change": "c2", "flag": "--y", "measured": "as written", "verdict": "v2"}]}
    lines = tried_table(tried, [row("a", 0, 0, fd_ratio=7.0)]).splitlines()[2:]
    assert "feature distance ratio 7.0," in lines[0] and "| as written |" in lines[1]


def test_a_tried_row_whose_arm_has_no_results_yet_says_so():
    tried = {"rows": [{"change": "c", "flag": "--x", "arm": "not run", "verdict": "v"}]}
    assert "| not measured yet |" in tried_table(tried, [row("a", 0, 0)])
