"""The README's sentences about the brightness experiment are generated from its committed results."""
import json

from experiments.summary import block
from tests.conftest import ROOT


def test_readme_states_the_brightness_experiment_numbers_of_its_committed_results():
    results = json.loads((ROOT / "docs" / "brightness" / "results.json").read_text())
    assert block(results) in (ROOT / "README.md").read_text()
