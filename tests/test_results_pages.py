"""The README and the pages under docs/ state what their results files hold, and link to what exists."""
import json
import re

import pytest

import bench
from experiments import brightness, default_run, recipe, schedules, solvers, training_curve
from tests.conftest import ROOT

RESULTS, README, DESIGN = ROOT / "docs" / "results.md", ROOT / "README.md", ROOT / "docs" / "design.md"


def between(page, name: str) -> str:
    """The text between a page's markers, as experiments.common.replace_between writes it."""
    return page.read_text().split(f"<!-- {name}:begin -->\n", 1)[1].split(f"\n<!-- {name}:end -->", 1)[0]


def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


# Each table of a page: the page, its markers' name, and the table as its command writes it from the results file.
TABLES = {
    **{f"results: brightness.{part}": (RESULTS, f"brightness.{part}",
                                       lambda part=part: brightness.PARTS[part].table(load("docs/brightness/results.json")))
       for part in brightness.PARTS},
    "results: schedules.table_1": (RESULTS, "schedules.table_1", lambda: schedules.table_1(load("docs/schedules/results.json"))),
    "results: schedules.resolution": (RESULTS, "schedules.resolution",
                                      lambda: schedules.resolution_table(load("docs/schedules/results.json"))),
    "results: solvers": (RESULTS, "solvers", lambda: solvers.table(load("docs/solvers/results.json"))),
    "results: default_run": (RESULTS, "default_run", lambda: default_run.table(load("docs/default_run/results.json"))),
    "results: curve": (RESULTS, "curve", lambda: training_curve.table(load("docs/default_run/curve.json"))),
    "README: headline": (README, "brightness.table", lambda: brightness.brightness_table(load("docs/headline/results.json"))),
    "design: recipe": (DESIGN, "recipe", lambda: recipe.table(load("docs/recipe/results.json")["rows"])),
    "benchmark": (ROOT / "docs" / "benchmark.md", "bench", lambda: bench.table(load("docs/bench/bench_cpu.json"))),
    "design: tried": (DESIGN, "tried", lambda: recipe.tried_table(load("docs/design/tried.json"),
                                                                  load("docs/recipe/results.json")["rows"])),
}


@pytest.mark.parametrize("name", TABLES)
def test_each_table_of_the_pages_is_what_its_command_writes_from_its_results_file(name):
    page, marker, table = TABLES[name]
    assert between(page, marker) == table()


def pages():
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def test_every_link_and_picture_of_the_readme_and_the_docs_exists():
    for page in pages():
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_readme_and_the_docs_are_short():
    assert len(README.read_text().splitlines()) <= 120
    assert sum(len(page.read_text().splitlines()) for page in (ROOT / "docs").glob("*.md")) <= 700


@pytest.mark.parametrize("words", [r"changelog", r"main job", r"slow kind", r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b", r"\b20\d\d-\d\d-\d\d\b",
                                   r"\barm \([a-e]\)", r"\bt1[0-9]\b"])
def test_no_page_speaks_of_the_projects_history_or_its_in_house_names(words):
    for page in pages():
        assert not re.search(words, page.read_text(), re.IGNORECASE), f"{page.name}: {words}"


def test_the_readme_states_the_headline_commands_time_from_its_results_file():
    minutes = load("docs/headline/results.json")["minutes"]
    assert f"# {round(minutes)} min on 2 CPU cores" in README.read_text()


def test_the_default_runs_published_log_is_the_run_its_table_measures_first():
    log = (ROOT / "docs/default_run/train_metrics.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["wall_s"] == load("docs/default_run/results.json")["rows"][0]["wall_s"]
