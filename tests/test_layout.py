"""The structure docs/design.md's layout table promises: imports only point down, and the installed
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


def _function(name: str) -> ast.FunctionDef:
    tree = ast.parse((ROOT / "train.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def test_the_training_loop_body_calls_nothing_imported_but_the_method_torch_and_runtimes_plumbing():
    tree = ast.parse((ROOT / "train.py").read_text())
    imported = {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    imported |= {alias.asname or alias.name: alias.name for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    loop = next(n for n in ast.walk(_function("train")) if isinstance(n, ast.While))
    used = {n.id for n in ast.walk(loop) if isinstance(n, ast.Name)} & set(imported)
    assert used and {imported[name].split(".")[0] for name in used} <= {"diffusion", "models", "torch", "runtime"}


def test_no_function_of_the_method_is_longer_than_forty_lines():
    for path in sorted((ROOT / "diffusion").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 40, f"{path.name}: {node.name}"


def test_no_function_of_the_method_takes_more_than_eight_parameters():
    for path in sorted((ROOT / "diffusion").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                a = node.args
                count = len(a.posonlyargs + a.args + a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg) - (a.args[:1] and a.args[0].arg == "self")
                assert count <= 8, f"{path.name}: {node.name} takes {count}"


def test_the_function_holding_the_training_loop_fits_on_a_screen_and_closes_over_nothing():
    train = _function("train")
    assert train.end_lineno - train.lineno + 1 <= 110
    assert not [n for n in ast.walk(ast.parse((ROOT / "train.py").read_text())) if isinstance(n, (ast.Nonlocal, ast.Global))]
    assert not [n for n in ast.walk(train) if isinstance(n, (ast.FunctionDef, ast.Lambda)) and n is not train]
