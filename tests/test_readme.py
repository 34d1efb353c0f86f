"""The README and its docs pages say what the committed results hold, and their commands run."""
import json
import os
import re
import shlex

import pytest

from experiments.main_job import summary as main_job_summary
from experiments.summary import block, headline, num
from experiments.training_curve import train_seconds
from tests.conftest import ROOT
from train import resolve
from train_config import check_config, parse_args


def _results(folder: str = "brightness") -> dict:
    return json.loads((ROOT / "docs" / folder / "results.json").read_text())


def test_the_brightness_page_states_the_numbers_of_the_committed_results_at_16_and_32_px():
    assert block(_results(), (_results("brightness-shapes32"),)) in (ROOT / "docs" / "brightness.md").read_text()


def test_the_readmes_headline_table_is_the_committed_results():
    assert headline(_results()) in (ROOT / "README.md").read_text()


def test_the_readmes_flow_sentence_says_what_its_rows_say():
    results = _results()
    assert "it still needs the trailing steps" in headline(results)
    for e in results["over_seeds"]:
        if e["kind"] == "trained" and e["model"] == "flow" and e["spacing"] == "leading":
            e["spread_ratio"] = dict(e["spread_ratio"], mean=0.9)  # as wide as with trailing steps
    assert "the step spacing makes no difference to it here" in headline(results)


def test_the_readmes_leak_sentence_quotes_each_first_step_gain_and_the_leak_put_back():
    results = _results()
    leak = {e["model"]: e for e in results["leak"]}
    assert "The leak, measured where it acts" not in headline(results) or "gain" in leak["baseline"]
    one = {"mean": 0.0, "std": 0.0}
    for model, gain, put_back in (("ideal_baseline", 0.41, 0.93), ("baseline", 0.37, 0.88), ("fixed", 0.02, 0.90)):
        leak[model].update(gain=dict(one, mean=gain), predicted_gain=0.45, predicted_squeeze=0.6, leak_only_spread=0.5, **{
            "leak_intervention.spread_ratio": dict(one, mean=put_back), "leak_everaert.spread_ratio": dict(one, mean=0.8)})
    text = headline(results)
    assert f"{num(leak['baseline'], 'gain')} for the trained ε baseline" in text
    assert "predicted from the data alone: 0.45" in text
    assert f"to {num(leak['baseline'], 'leak_intervention.spread_ratio')}, and" in text
    del leak["baseline"]["gain"]  # no trained gain measured: no sentence
    assert "The leak, measured where it acts" not in headline(results)


def test_the_readme_is_a_front_page_whose_links_all_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).exists() for link in links if not link.startswith("http")), links


def test_every_link_of_the_docs_pages_exists():
    for page in (ROOT / "docs").glob("*.md"):
        links = [link for link in re.findall(r"\]\(([^)#]+)\)", page.read_text()) if not link.startswith("http")]
        assert all((page.parent / link).exists() for link in links), (page.name, links)


def readme_train_commands(text: str) -> list[list[str]]:
    """The arguments of every `python train.py …` and `torchrun … train.py …` in the text (in a code block
    or a code span), as a shell would split them: backslash continuations joined, a comment and anything
    after `&&` cut."""
    commands = []
    for match in re.finditer(r"\b(?:python|torchrun)\b[^`\n]*?\btrain\.py\b([^`\n]*)", text.replace("\\\n", " ")):
        commands.append(shlex.split(match.group(1).split("&&")[0].split(" #")[0]))
    return commands


def test_every_train_command_in_the_readme_and_its_pages_parses_and_names_its_data():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = [args for page in pages for args in readme_train_commands(page.read_text())]
    assert len(commands) >= 8
    for args in commands:
        given, _ = parse_args([os.path.expanduser(a) for a in args])  # argparse exits on a flag that does not exist
        config = resolve(given, None)
        check_config(config, given)
        assert config.dataset == "shapes" or "data_dir" in given, args  # the files must be somewhere


def test_the_readme_command_reader_sees_continuations_and_stops_at_comments():
    text = "python train.py --steps 5 \\\n  --lr 1e-3   # a comment\ntorchrun --nproc_per_node 2 train.py --seed 1 && python sample.py x"
    assert readme_train_commands(text) == [["--steps", "5", "--lr", "1e-3"], ["--seed", "1"]]


@pytest.mark.parametrize("page, results", [("main_job", "main_job/results"), ("main_job", "main_job/guidance"),
                                           ("main_job", "main_job/curve_unguided"), ("main_job", "main_job/curve_seed1"),
                                           ("main_job", "main_job/guidance_120"),
                                           ("main_job", "main_job/guidance_interval"),
                                           ("main_job", "main_job/guidance_interval_grid"),
                                           ("quality_trials", "quality_trials/detail_skip"),
                                           ("quality_trials", "quality_trials/final_layer"),
                                           ("quality_trials", "quality_trials/lognormal"),
                                           ("quality_trials", "quality_trials/fullres"),
                                           ("quality_trials", "quality_trials/detail_out")])
def test_the_main_job_pages_state_the_rows_of_their_results(page, results):
    from experiments.main_job import table

    assert table(json.loads((ROOT / "docs" / f"{results}.json").read_text())) in (ROOT / "docs" / f"{page}.md").read_text()


def test_the_main_job_page_quotes_its_error_by_t_rows_from_the_file_the_command_wrote():
    page = (ROOT / "docs" / "main_job.md").read_text()
    quoted = page.split("<!-- error_by_t:begin -->")[1].split("<!-- error_by_t:end -->")[0].strip().splitlines()
    written = (ROOT / "docs" / "main_job" / "error_by_t.md").read_text().splitlines()
    assert len(quoted) == 14 and all(row in written for row in quoted)


@pytest.mark.parametrize("name", ["noise", "noise_data"])
def test_the_quality_page_states_the_yardsticks_noise_of_its_results(name):
    from experiments.yardstick_noise import table

    results = json.loads((ROOT / "docs" / "quality" / f"{name}.json").read_text())
    assert table(results) in (ROOT / "docs" / "quality.md").read_text()


def test_no_commit_hash_or_issue_number_in_the_readme_or_docs_outside_the_changelog():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text().split("## Changelog")[0]
        assert not re.search(r"\bissue\s*#?\d+|\bcommit [0-9a-f]{7,40}\b|\bat [0-9a-f]{7}\b", text, re.I), page.name


def test_the_readmes_reading_order_gives_each_files_line_count():
    rows = re.findall(r"^\| `([\w/]+\.py)` \| (\d+) \|", (ROOT / "README.md").read_text(), re.M)
    assert len(rows) >= 6
    for path, lines in rows:
        assert len((ROOT / path).read_text().splitlines()) == int(lines), path


def _between(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:begin -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0].strip()


def test_the_readme_shows_what_the_main_jobs_sample_py_printed():
    printed = (ROOT / "docs" / "main_job" / "sample_output.txt").read_text().strip()
    assert _between((ROOT / "README.md").read_text(), "sample_output") == f"```text\n{printed}\n```"


def test_the_readmes_time_of_the_main_job_is_what_its_runs_log_says():
    log = ROOT / "docs" / "main_job" / "train_metrics.jsonl"  # the default run behind docs/main_job.md's rows
    assert json.loads(log.read_text().splitlines()[-1])["step"] == resolve({}, None).steps
    assert _between((ROOT / "README.md").read_text(), "main_job_minutes") == f"{train_seconds(log.parent, log.name) / 60:.0f}"


def test_the_readmes_grids_are_in_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "docs/main_job/samples.png" in text and "docs/main_job/data.png" in text
    assert (ROOT / "docs" / "main_job" / "samples.png").is_file() and (ROOT / "docs" / "main_job" / "data.png").is_file()


def test_the_readmes_main_job_sentence_is_the_committed_rows():
    results = json.loads((ROOT / "docs" / "main_job" / "results.json").read_text())
    assert main_job_summary(results) in (ROOT / "README.md").read_text()


def test_the_main_job_page_states_the_training_curves_rows():
    from experiments.training_curve import table

    curve = json.loads((ROOT / "docs" / "main_job" / "curve.json").read_text())
    assert table(curve) in (ROOT / "docs" / "main_job.md").read_text()


def test_the_main_job_page_and_the_readme_say_when_each_target_is_met_as_the_committed_curve_does():
    from experiments.training_curve import when_met

    sentence = when_met(json.loads((ROOT / "docs" / "main_job" / "curve.json").read_text()))
    assert sentence in (ROOT / "docs" / "main_job.md").read_text() and sentence in (ROOT / "README.md").read_text()

