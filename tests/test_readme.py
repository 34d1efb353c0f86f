"""The README's sentences about the brightness experiment are generated from its committed results."""
import json
import os
import re
import shlex

from experiments.summary import block
from tests.conftest import ROOT
from train import resolve
from train_config import check_config, parse_args


def test_readme_states_the_brightness_experiment_numbers_of_its_committed_results():
    results = json.loads((ROOT / "docs" / "brightness" / "results.json").read_text())
    assert block(results) in (ROOT / "README.md").read_text()


def readme_train_commands(text: str) -> list[list[str]]:
    """The arguments of every `python train.py …` and `torchrun … train.py …` in the text (in a code block
    or a code span), as a shell would split them: backslash continuations joined, a comment and anything
    after `&&` cut."""
    commands = []
    for match in re.finditer(r"\b(?:python|torchrun)\b[^`\n]*?\btrain\.py\b([^`\n]*)", text.replace("\\\n", " ")):
        commands.append(shlex.split(match.group(1).split("&&")[0].split(" #")[0]))
    return commands


def test_every_train_command_in_the_readme_parses_and_names_its_data():
    commands = readme_train_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 4
    for args in commands:
        given, _ = parse_args([os.path.expanduser(a) for a in args])  # argparse exits on a flag that does not exist
        config = resolve(given, None)
        check_config(config, given)
        assert config.dataset == "shapes" or "data_dir" in given, args  # the files must be somewhere


def test_the_readme_command_reader_sees_continuations_and_stops_at_comments():
    text = "python train.py --steps 5 \\\n  --lr 1e-3   # a comment\ntorchrun --nproc_per_node 2 train.py --seed 1 && python sample.py x"
    assert readme_train_commands(text) == [["--steps", "5", "--lr", "1e-3"], ["--seed", "1"]]
