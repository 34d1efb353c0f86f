"""The training curve: one run read at several step counts, each point the one before resumed."""
import json

from experiments import training_curve
from experiments.training_curve import point, train_seconds


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
