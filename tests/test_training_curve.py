"""experiments.training_curve's minutes and table, with known answers."""
from experiments.training_curve import minutes, stable_steps, table

METRICS = {"class_accuracy": 0.7, "fd_ratio": 10.0, "spectrum_max": 2.0, "spectrum_min": 0.5, "chroma_ratio": 1.0,
           "spread_ratio": 0.9, "w1": 0.02}


def test_a_points_minutes_are_the_wall_time_in_its_log():
    assert minutes({"rows": [{"steps": 100, "wall_s": 90.0}, {"steps": 200, "wall_s": 150.0}]}) == [1.5, 2.5]


def test_the_earlier_recipes_minutes_are_its_steps_at_its_measured_seconds_a_step():
    assert minutes({"seconds_per_step": 0.3, "rows": [{"steps": 100}, {"steps": 400}]}) == [0.5, 2.0]


def test_the_table_has_a_line_per_point_with_its_minutes_and_the_mean_over_sampling_seeds():
    rows = [{"steps": 550, "wall_s": 150.0, **METRICS, "fd_ratio": 20.0}, {"steps": 550, "wall_s": 150.0, **METRICS},
            {"steps": 1100, "wall_s": 300.0, **METRICS}]
    lines = table({"rows": rows}).splitlines()[2:]
    assert [line.split(" | ")[:3] for line in lines] == [["| 550", "2.5", "2"], ["| 1,100", "5.0", "1"]]
    assert "| 15.0 ± 7.1 |" in lines[0]


def test_a_points_trunk_is_the_default_runs_steps_before_its_decay():
    assert [stable_steps(n) for n in (375, 1500, 6000)] == [300, 1200, 4800]
