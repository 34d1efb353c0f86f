"""sample.py's flags: one dataclass built as train.py's (cli.flag), checked in one place."""
import re

import pytest

import sample
import train_config
from cli import UsageError
from sample import SampleConfig, check_sample_config, parse_args

BAD_VALUES = [
    ({"spacing": "trailing", "offset": 1}, "--offset shifts leading timesteps only; --spacing trailing has no offset"),
    ({"sampler": "dpmpp-2m", "eta": 0.5}, "--eta is a DDIM option; dpmpp-2m is deterministic"),
    ({"num_samples": 0}, "--num-samples must be positive, got 0"),
    ({"batch_size": -1}, "--batch-size must be positive, got -1"),
    ({"guidance": -0.5}, "--guidance must be zero or positive, got -0.5"),
    ({"offset_noise": float("nan")}, "--offset-noise must be zero or positive, got nan"),
    ({"guidance_rescale": 1.5}, "--guidance-rescale must be in [0, 1], got 1.5"),
    ({"guidance_rescale": -0.1}, "--guidance-rescale must be in [0, 1], got -0.1"),
    ({"eta": 2.0}, "--eta must be in [0, 1], got 2.0"),
    ({"out": "runs/grid"}, "--out runs/grid: name an image file, e.g. grid.png"),
    ({"guidance_interval": (0, 700), "unconditional": True}, "--guidance-interval limits guidance, and this draws "
     "unguided: drop it, or give a --guidance other than 1 without --unconditional"),
    ({"guidance_interval": (700, 200)}, "--guidance-interval takes LOW ≤ HIGH, both zero or positive; got 700 200"),
    ({"guidance_interval": (-1, 700)}, "--guidance-interval takes LOW ≤ HIGH, both zero or positive; got -1 700"),
]


@pytest.mark.parametrize("values, message", BAD_VALUES, ids=[m.split(" ")[0] + str(v) for v, m in BAD_VALUES])
def test_the_sample_check_refuses_each_bad_value_with_its_one_line_message(values, message):
    with pytest.raises(UsageError) as refused:
        check_sample_config(SampleConfig("run/checkpoint.pt", **values))
    assert str(refused.value) == message


def test_the_sample_check_accepts_the_defaults_and_each_range_up_to_its_edges():
    check_sample_config(SampleConfig("run/checkpoint.pt"))
    check_sample_config(SampleConfig("run/checkpoint.pt", spacing="leading", offset=0, num_samples=1, batch_size=1,
                                     guidance=0.0, offset_noise=0.0, guidance_rescale=1.0, eta=1.0,
                                     guidance_interval=(0, 0)))


def test_parse_args_refuses_a_bad_value_through_the_same_check():
    with pytest.raises(UsageError, match=r"^--guidance-rescale must be in \[0, 1\], got 1.5$"):
        parse_args(["run/checkpoint.pt", "--guidance-rescale", "1.5"])


def test_num_samples_defaults_to_64_and_to_512_with_evaluate():
    assert parse_args(["run/checkpoint.pt"]).num_samples == 64
    assert parse_args(["run/checkpoint.pt", "--evaluate"]).num_samples == 512
    assert parse_args(["run/checkpoint.pt", "--evaluate", "--num-samples", "8"]).num_samples == 8


def test_the_checkpoint_is_positional_and_the_class_flag_fills_the_class_field(capsys):
    config = parse_args(["run/checkpoint.pt", "--class", "disc", "--num-steps", "25"])
    assert (config.checkpoint, config.class_, config.num_steps) == ("run/checkpoint.pt", "disc", 25)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert re.search(r"^  --class CLASS ", capsys.readouterr().out, re.M)  # the field's underscore is not the flag's


def _help_of(flag: str, text: str) -> str:
    """The help of one flag in the output of --help, its line breaks undone."""
    return " ".join(re.search(rf"^  {flag} \S+(.*?)(?=^  -|\Z)", text, re.S | re.M).group(1).split())


@pytest.mark.parametrize("flag", ["--device", "--precision"])
def test_train_and_sample_print_the_same_help_for_the_flag(flag, capsys):
    helps = []
    for parse in (train_config.parse_args, sample.parse_args):
        with pytest.raises(SystemExit):
            parse(["--help"])
        helps.append(_help_of(flag, capsys.readouterr().out))
    assert helps[0] == helps[1] and len(helps[0]) > 30
