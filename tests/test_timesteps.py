import pytest
import torch

from diffusion import SPACINGS, get_timesteps, spacing_offset


def test_trailing_1000_50_matches_paper_table_2():
    assert get_timesteps(1000, 50, "trailing").tolist() == list(range(999, 0, -20))


# round(arange(T, 0, −T/S)) − 1 (paper Table 2), worked out by hand: for these S the fractional part of
# T − k·T/S is a multiple of 1/3 or of 1/7, never 1/2, so the rounding has no ties. An integer stride
# T // S (333, 142, 33) drifts from these after the first step; the shared snippet arange(gap, T + 1, gap)
# misses 999 itself.
TRAILING_BY_HAND = {
    3: [999, 666, 332],  # 1000, 666.67, 333.33
    7: [999, 856, 713, 570, 428, 285, 142],  # 1000, 857.14, 714.29, 571.43, 428.57, 285.71, 142.86
    30: [999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532,  # 1000 − k·33.33…
         499, 466, 432, 399, 366, 332, 299, 266, 232, 199, 166, 132, 99, 66, 32],
}


@pytest.mark.parametrize("steps", TRAILING_BY_HAND)
def test_trailing_uses_the_float_stride_t_over_s_when_s_does_not_divide_t(steps):
    assert get_timesteps(1000, steps, "trailing").tolist() == TRAILING_BY_HAND[steps]


def test_leading_with_offset_1_matches_stable_diffusion():
    assert get_timesteps(1000, 50, "leading", offset=1).tolist() == list(range(981, 0, -20))


def test_linspace_1000_5_covers_both_ends():
    assert get_timesteps(1000, 5, "linspace").tolist() == [999, 749, 500, 250, 0]


@pytest.mark.parametrize("steps", [1, 7, 25, 30, 50, 100, 333, 1000])
def test_trailing_spacing_starts_at_the_last_training_step_for_any_step_count(steps):
    assert get_timesteps(1000, steps, "trailing")[0].item() == 999


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 30, 50, 999, 1000])
def test_every_spacing_gives_s_distinct_descending_int64_steps_in_range(spacing, steps):
    if spacing == "leading" and steps == 1000:
        steps = 999  # leading with S = T would need offset 0
    timesteps = get_timesteps(1000, steps, spacing)
    assert timesteps.dtype == torch.int64 and len(timesteps) == steps
    assert (timesteps[1:] < timesteps[:-1]).all()
    assert timesteps.min() >= 0 and timesteps.max() <= 999


def test_leading_never_reaches_the_last_training_step():
    assert get_timesteps(1000, 50, "leading", offset=1)[0].item() == 981


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_step_counts_outside_one_to_t_are_refused(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        get_timesteps(1000, steps, "trailing")


def test_leading_offset_that_passes_the_last_step_is_refused():
    with pytest.raises(ValueError, match="offset"):
        get_timesteps(1000, 1000, "leading", offset=1)


def test_unknown_spacing_is_refused():
    with pytest.raises(ValueError, match="unknown spacing"):
        get_timesteps(1000, 10, "uniform")


def test_only_leading_spacing_is_offset_by_one_as_stable_diffusion():
    assert [spacing_offset(s) for s in SPACINGS] == [1, 0, 0]
    assert get_timesteps(1000, 50, "leading", spacing_offset("leading"))[[0, -1]].tolist() == [981, 1]
