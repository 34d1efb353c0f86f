"""The structure the README's Layout table promises: imports only point down, and the installed
library (diffusion/, models/) stands alone."""
import ast

import pytest

from tests.conftest import ROOT

SCRIPTS = {"train", "sample", "bench"}
# Each layer, and the project modules it may import (besides the standard library and its dependencies).
FLOORS = {
    "diffusion": {"diffusion"},
    "models": {"diffusion", "models"},
    "cli": {"models"},
    "data": {"cli", "data", "diffusion"},
    "runtime": {"cli", "models"},
    "train_config": {"cli", "data", "diffusion", "models"},
    "evaluation": {"cli", "data", "diffusion", "evaluation", "models"},
    "experiments": {"cli", "data", "diffusion", "evaluation", "experiments", "models", "train_config"},
}
PROJECT = set(FLOORS) | SCRIPTS


def project_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & PROJECT


@pytest.mark.parametrize("layer", FLOORS)
def test_a_layer_imports_only_the_layers_below_it_and_never_a_script(layer):
    files = [ROOT / f"{layer}.py"] if (ROOT / f"{layer}.py").exists() else sorted((ROOT / layer).glob("*.py"))
    assert files
    for path in files:
        assert project_imports(path) <= FLOORS[layer], path.name


def test_every_module_of_the_checkout_is_a_script_or_on_a_floor():
    modules = {p.stem for p in ROOT.glob("*.py")} | {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert modules - {"setup", "tests"} == PROJECT
