from experiments.error_by_t import TIMESTEPS, error_by_t


def test_the_diagnostic_measures_the_last_two_timesteps_of_the_default_sampler_with_every_band(tiny_run):
    rows = error_by_t(str(tiny_run / "checkpoint.pt"), num_images=8, sample_steps=50)
    assert [r["t"] for r in rows] == sorted({*TIMESTEPS, 19, 39})
    assert all(len(r["bands"]) == 8 for r in rows)
