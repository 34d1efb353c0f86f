from experiments.main_job import misses

WITHIN = {"spectrum_min": 0.8, "spectrum_max": 1.3, "chroma_ratio": 1.0, "spread_ratio": 0.95, "w1": 0.02,
          "fd_ratio": 2.0, "class_accuracy": 0.79, "data_class_accuracy": 0.80}


def test_a_row_within_every_target_misses_none():
    assert misses(WITHIN) == []


def test_each_target_missed_is_named():
    assert misses({**WITHIN, "spectrum_max": 1.5}) == ["spectrum"]
    assert misses({**WITHIN, "chroma_ratio": 0.7, "w1": 0.04}) == ["chroma_ratio", "w1"]
    assert misses({**WITHIN, "class_accuracy": 0.70}) == ["class_accuracy_gap"]
    assert misses({**WITHIN, "spread_ratio": 0.85, "fd_ratio": 6.0}) == ["spread_ratio", "fd_ratio"]
