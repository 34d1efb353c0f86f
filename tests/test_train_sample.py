"""train.py and sample.py end to end, run as a user runs them."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, TINY, run_script, run_script_in_this_process, write_celeba, write_cifar10, write_image_folder
from runtime import StepBatches, restore_rng_states


def test_training_writes_checkpoint_metrics_and_a_grid_per_checkpoint(tiny_run):
    assert (tiny_run / "checkpoint.pt").is_file()
    assert sorted(p.name for p in tiny_run.glob("samples_*.png")) == ["samples_000002.png", "samples_000004.png"]
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["images_per_sec"] > 0 for r in losses)


def test_each_checkpoint_appends_the_yardstick_of_its_grid_to_the_metrics(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    quality = [r for r in rows if "quality" in r]
    assert [r["step"] for r in quality] == [2, 4]
    assert all({"fd_ratio", "hf_ratio", "class_accuracy", "spread_ratio", "w1"} <= set(r["quality"]) for r in quality)


def test_sample_writes_a_valid_grid_and_prints_the_brightness_summary(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--num-samples", "6", "--num-steps", "3",
                        "--out", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "each"))
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size[0] > 32 and grid.mode == "RGB"
    assert len(list((tmp_path / "each").glob("*.png"))) == 6
    lines = dict(line.split(" {", 1) for line in result.stdout.splitlines() if "brightness {" in line)
    for name in ("brightness", "data brightness"):
        assert set(json.loads("{" + lines[name])) == {"mean", "std", "p5", "p95", "frac_dark", "frac_bright"}


def test_sample_with_a_class_and_rescaled_guidance_runs(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--class", "stripes", "--guidance", "5",
                        "--num-samples", "2", "--num-steps", "2", "--out", str(tmp_path / "g.png"))
    assert result.returncode == 0, result.stderr


def test_sample_draws_a_class_conditional_model_guided_a_row_per_class_by_default(tiny_run, tmp_path):
    from sample import GUIDANCE

    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--num-samples", "8", "--num-steps", "2",
                        "--out", str(tmp_path / "g.png"))
    assert result.returncode == 0, result.stderr
    assert f"guidance w = {GUIDANCE:g}, φ = 0.7" in result.stdout and GUIDANCE > 1


@pytest.mark.slow
def test_sample_guides_only_within_the_guidance_interval_it_is_given(tiny_run, tmp_path):
    def grid(*flags: str) -> bytes:  # 2 trailing steps of 1,000: t = 999 and 499
        out = tmp_path / f"grid{'_'.join(flags)}.png"
        result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), *flags, "--num-samples", "4",
                            "--num-steps", "2", "--out", str(out))
        assert result.returncode == 0, result.stderr
        return out.read_bytes()

    outside = grid("--guidance-interval", "0", "400")
    assert outside == grid("--guidance", "1")  # no step inside: the class's own prediction throughout
    assert outside != grid("--guidance-interval", "0", "999") == grid()  # every step inside: the default


def test_sample_unconditional_draws_without_class_or_guidance(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--unconditional", "--num-samples", "2",
                        "--num-steps", "2", "--out", str(tmp_path / "u.png"))
    assert result.returncode == 0, result.stderr
    assert "unguided" in result.stdout


def test_the_default_grid_gives_each_row_one_class_and_every_class_equal_rows():
    from evaluation.preview import GRID_ROW, grid_labels

    labels = grid_labels(8 * GRID_ROW, 4)
    rows = labels.view(8, GRID_ROW)
    assert (rows == rows[:, :1]).all() and rows[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_same_seed_gives_the_same_samples(tiny_run, tmp_path):
    for name in ("a", "b"):
        run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--num-samples", "2", "--num-steps", "2",
                   "--eta", "1", "--out-dir", str(tmp_path / name), "--out", str(tmp_path / f"{name}.png"))
    assert (tmp_path / "a" / "000001.png").read_bytes() == (tmp_path / "b" / "000001.png").read_bytes()


def test_resume_continues_from_the_checkpoint_to_the_new_step_count(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = run_script("train.py", "--out", str(run), "--resume", "--steps", "6")
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 6
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_every_metrics_row_carries_the_runs_wall_time(tiny_run):
    walls = [json.loads(r)["wall_s"] for r in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert walls == sorted(walls) and walls[0] > 0


def test_a_resumed_metrics_log_counts_its_wall_time_on_from_the_last_row_it_keeps(tmp_path):
    import time

    from runtime import MetricsLog

    path = tmp_path / "metrics.jsonl"  # a run killed after step 9, resumed from its checkpoint at step 5
    path.write_text('{"step": 5, "loss": 1.0, "wall_s": 100.0}\n{"step": 9, "loss": 1.0, "wall_s": 140.0}\n')
    log = MetricsLog(path, 5, 0, time.perf_counter())
    log.write({"step": 6, "loss": 0.5})
    log.close()
    rows = [json.loads(r) for r in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 6] and 100.0 <= rows[1]["wall_s"] < 110.0


def with_a_field_this_code_lacks(tiny_run, tmp_path, where: str):
    """A copy of the tiny run whose checkpoint's `where` config holds a field this code does not have, as one
    that another version of train.py wrote."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    state[where]["final_layer"] = False
    torch.save(state, run / "checkpoint.pt")
    return run


def assert_refused_in_one_line(result, word: str):
    assert result.returncode == 2 and word in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_checkpoint_whose_model_config_is_not_this_codes_is_refused_in_one_line(tiny_run, tmp_path):
    run = with_a_field_this_code_lacks(tiny_run, tmp_path, "model_config")
    assert_refused_in_one_line(run_script_in_this_process("train.py", "--out", str(run), "--resume", "--steps", "5"),
                               "final_layer")
    assert_refused_in_one_line(run_script_in_this_process("sample.py", str(run / "checkpoint.pt"), "--num-steps", "1",
                                                          "--out", str(tmp_path / "grid.png")), "final_layer")


def test_resuming_a_checkpoint_whose_training_config_is_not_this_codes_is_refused_in_one_line(tiny_run, tmp_path):
    run = with_a_field_this_code_lacks(tiny_run, tmp_path, "config")
    assert_refused_in_one_line(run_script_in_this_process("train.py", "--out", str(run), "--resume", "--steps", "5"),
                               "final_layer")


def test_cifar10_folder_trains_through_the_cli(tmp_path):
    write_cifar10(tmp_path / "cifar")
    result = run_script("train.py", *TINY, "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                        "--steps", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["classes"][9] == "truck"


def test_image_folder_trains_unconditionally_through_the_cli(tmp_path):
    write_image_folder(tmp_path / "images", per_class=4)
    result = run_script("train.py", "--model", "tiny", "--dataset", "folder", "--data-dir", str(tmp_path / "images"),
                        "--image-size", "16", "--no-class-cond", "--batch-size", "4", "--steps", "2",
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert state["model_config"]["num_classes"] == 0 and state["config"]["label_dropout"] == 0


def test_celeba_folder_trains_unconditionally_through_the_cli(tmp_path):
    write_celeba(tmp_path / "faces")
    result = run_script("train.py", "--model", "tiny", "--dataset", "celeba", "--data-dir", str(tmp_path / "faces"),
                        "--image-size", "16", "--batch-size", "2", "--steps", "2", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["model_config"]["num_classes"] == 0


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_two_process_ddp_training_through_torchrun_writes_one_checkpoint(tmp_path):
    result = torchrun(str(ROOT / "train.py"), "--device", "cpu", *TINY, "--steps", "3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3


@pytest.mark.slow
def test_both_ranks_end_with_identical_weights_and_ema(tmp_path):
    result = torchrun(str(ROOT / "tests" / "ddp_probe.py"), "--device", "cpu", *TINY, "--steps", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in ("model", "ema"):
        for name, value in ranks[0][key].items():
            assert torch.equal(value, ranks[1][key][name]), f"{key}.{name} differs between ranks"


def test_ranks_take_disjoint_halves_of_each_global_batch():
    halves = [list(zip(range(5), StepBatches(100, 8, seed=0, start_step=0, rank=r, world=2))) for r in (0, 1)]
    for (_, a), (_, b) in zip(*halves):
        assert len(a) == len(b) == 4 and not set(a) & set(b)


@pytest.mark.slow
def test_checkpoint_under_torchrun_saves_each_ranks_own_rng_stream(tmp_path):
    result = torchrun(str(ROOT / "train.py"), "--device", "cpu", *TINY, "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0], state["rng"][1])


def test_each_rank_resumes_its_own_rng_stream():
    streams = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        streams.append(torch.get_rng_state())
    for rank in (0, 1):
        restore_rng_states({"rng": streams, "step": 5}, rank, 2, torch.device("cpu"), seed=0)
        assert torch.equal(torch.get_rng_state(), streams[rank])


def test_resume_with_another_number_of_processes_reseeds_each_rank_differently():
    draws = []
    for rank in (0, 1):
        restore_rng_states({"rng": [torch.get_rng_state()], "step": 5}, rank, 2, torch.device("cpu"), seed=0)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_with_a_checkpoint(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(ROOT / "train.py"), "--device", "cpu", *TINY, "--steps", "100000", "--ckpt-every", "100000",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    metrics, deadline = tmp_path / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    rank1 = [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_rank(pid, 1, str(tmp_path))]
    assert len(rank1) == 1, "could not find rank 1"
    os.kill(int(rank1[0]), signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert 3 <= torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] < 100000


def _is_rank(pid: str, rank: int, out: str) -> bool:
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        environ = open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return False
    return b"train.py" in cmdline and out.encode() in cmdline and f"\0RANK={rank}\0".encode() in b"\0" + environ


def test_sample_with_dpmpp_2m_and_rescaled_guidance_runs(tiny_run, tmp_path):
    result = run_script("sample.py", str(tiny_run / "checkpoint.pt"), "--sampler", "dpmpp-2m", "--class", "disc",
                        "--guidance", "3", "--num-samples", "4", "--num-steps", "3", "--out", str(tmp_path / "g.png"))
    assert result.returncode == 0, result.stderr
    assert "dpmpp-2m" in result.stdout


@pytest.mark.slow
def test_solvers_experiment_writes_a_row_per_model_sampler_and_step_count(tiny_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments.solvers", str(tiny_run / "checkpoint.pt"),
                             "--num-samples", "8", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 5 and all(r["spread_ratio"] > 0 for r in rows)


@pytest.mark.slow
def test_hflip_is_on_for_shapes_and_off_for_a_folder_by_default_and_can_be_turned_off(tiny_run, tmp_path):
    assert torch.load(tiny_run / "checkpoint.pt", weights_only=True)["config"]["hflip"] is True
    folder = write_image_folder(tmp_path / "images")
    result = run_script("train.py", "--dataset", "folder", "--data-dir", str(folder), "--model", "tiny", "--image-size", "16",
                        "--batch-size", "2", "--steps", "1", "--out", str(tmp_path / "folder"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "folder" / "checkpoint.pt", weights_only=True)["config"]["hflip"] is False
    result = run_script("train.py", *TINY, "--no-hflip", "--steps", "1", "--out", str(tmp_path / "off"))
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "off" / "checkpoint.pt", weights_only=True)["config"]["hflip"] is False


def test_hold_out_keeps_that_many_images_out_of_training(tmp_path):
    result = run_script("train.py", *TINY, "--hold-out", "24", "--steps", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "on 40 shapes images" in result.stdout


@pytest.mark.slow
def test_a_flow_run_trains_and_samples_through_the_cli(tmp_path):
    result = run_script("train.py", *TINY, "--objective", "flow", "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    result = run_script("sample.py", str(tmp_path / "checkpoint.pt"), "--num-steps", "3", "--num-samples", "4",
                        "--class", "0", "--guidance", "3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "grid.png").is_file()


def test_flow_refuses_the_flags_its_path_fixes_in_one_line(tmp_path):
    result = run_script_in_this_process("train.py", *TINY, "--objective", "flow", "--prediction", "x0", "--out", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--prediction does nothing with --objective flow" in result.stderr


@pytest.mark.slow
def test_the_readmes_first_line_runs_twice_in_a_row(tmp_path):
    for _ in range(2):  # train.py && sample.py, as README line 1 (install aside), on the tiny preset
        trained = run_script("train.py", *TINY, "--steps", "2", "--out", str(tmp_path))
        assert trained.returncode == 0, trained.stderr
        sampled = run_script("sample.py", str(tmp_path / "checkpoint.pt"), "--num-steps", "2", "--num-samples", "4")
        assert sampled.returncode == 0, sampled.stderr
    assert "nothing to do" in trained.stdout
