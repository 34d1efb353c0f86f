"""The training curve: one run read at several step counts, each point the one before resumed."""
import json

from experiments import training_curve
from experiments.training_curve import point, train_seconds, when_met


def test_training_time_is_each_logged_windows_images_over_its_speed(tmp_path):
    rows = [{"step": 10, "loss": 1.0, "images_per_sec": 64.0}, {"step": 10, "quality": {}},
            {"step": 30, "loss": 1.0, "images_per_sec": 128.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert train_seconds(tmp_path) == 10 * 64 / 64 + 20 * 64 / 128  # 10 s, then 10 s


def test_the_first_point_trains_its_steps_and_each_later_one_resumes_a_copy_of_the_one_before(tmp_path, monkeypatch):
    calls = []

    def fake_train_run(run_dir, settings, steps):
        calls.append((run_dir.name, settings, steps, sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else None))
        run_dir.mkdir(exist_ok=True)
        (run_dir / "checkpoint.pt").write_text(str(steps))
        (run_dir / f"samples_{steps}.png").write_text("")

    monkeypatch.setattr(training_curve, "train_run", fake_train_run)
    point(tmp_path, 675, None)
    point(tmp_path, 1350, 675)
    assert calls == [("step_000675", {"steps": 675}, 675, None),
                     ("step_001350", {}, 1350, ["checkpoint.pt"])]  # the copy: the checkpoint, not the grids
    assert (tmp_path / "step_000675" / "checkpoint.pt").read_text() == "675"  # the point before is kept


def _curve(*points: tuple[float, list[float]]) -> dict:
    """A curve whose rows meet every target but the feature distance, which reads the values given per point."""
    good = {"spectrum_min": 1.0, "spectrum_max": 1.0, "chroma_ratio": 1.0, "spread_ratio": 1.0, "w1": 0.0,
            "class_accuracy": 0.8, "data_class_accuracy": 0.8}
    return {"rows": [{**good, "steps": 100 * (i + 1), "minutes_slow_kind": minutes, "seed": seed, "fd_ratio": fd}
                     for i, (minutes, fds) in enumerate(points) for seed, fd in enumerate(fds)]}


def test_a_target_met_on_every_seed_from_a_point_on_is_met_from_that_points_minutes():
    text = when_met(_curve((10.0, [9.0, 4.0]), (20.0, [4.5, 4.0]), (40.0, [3.0, 2.0])))
    assert "feature distance ratio ≤ 5 from 20.0 minutes on" in text
    assert "W1 ≤ 0.03 from 10.0 minutes on" in text


def test_a_target_met_from_a_point_on_names_the_points_before_where_it_was_met_too():
    text = when_met(_curve((10.0, [4.0]), (20.0, [6.0]), (40.0, [4.0]), (80.0, [3.0])))
    assert "feature distance ratio ≤ 5 from 40.0 minutes on (also met at 10.0 minutes)" in text


def test_a_target_met_only_at_the_last_point_says_so():
    assert "feature distance ratio ≤ 5 at 40.0 minutes, the last point" in when_met(
        _curve((10.0, [4.0]), (20.0, [6.0]), (40.0, [4.0])))  # met at first, lost, met again


def test_a_target_met_earlier_but_missed_at_the_last_point_is_not_met_and_names_where_it_was():
    text = when_met(_curve((10.0, [4.0, 4.0]), (20.0, [6.0, 4.0])))
    assert "feature distance ratio ≤ 5 not by 20.0 minutes (1 of 2 sampling seeds there, 4.00-6.00; " \
           "met on every seed at 10.0 minutes" in text


def test_a_shrinking_target_not_met_is_carried_on_the_power_law_through_its_last_two_points():
    # 20 at 10 minutes, 10 at 40: the ratio halves each time the training time is multiplied by 4, so 5 at 160
    text = when_met(_curve((5.0, [30.0]), (10.0, [18.0, 22.0]), (40.0, [10.0, 10.0])))
    assert "the seeds' mean would reach 5 at about 160 minutes" in text
    assert "an extrapolation" in text


def test_a_target_that_stopped_shrinking_is_not_extrapolated():
    assert "would reach" not in when_met(_curve((10.0, [8.0]), (20.0, [9.0])))


def test_a_spectrum_missed_from_below_is_not_carried_on_toward_its_upper_bound():
    curve = _curve((10.0, [4.0]), (20.0, [4.0]))
    curve["rows"][0].update(spectrum_max=3.0)
    curve["rows"][1].update(spectrum_max=2.0)
    assert "the seeds' mean highest band would reach 1.4" in when_met(curve)  # too grainy only: carried on
    curve["rows"][1].update(spectrum_min=0.5)  # and too smooth in a band: a fall of the highest band will not do
    text = when_met(curve)
    assert "every spectrum band within [0.7, 1.4] not by 20.0 minutes (0 of 1 sampling seeds there, " \
           "lowest band 0.50-0.50, highest 2.00-2.00)" in text
