import json
import platform
import subprocess
import sys

from conftest import ROOT, subprocess_env

from benchmarks.baseline import baseline_epoch_seconds
from stages.prepare import prepare
from study.data import load_prepared


def test_study_benchmark_runs_without_mlflow_or_dvc(tmp_path, image_tree):
    prepare(source=str(image_tree), out_dir=tmp_path / "data")
    # a bare GPU box has neither package: make both unimportable
    blocker = tmp_path / "blocker"
    for name in ("mlflow", "dvc"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env = subprocess_env(PYTHONPATH=f"{blocker}:{ROOT}")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", "study", "--device", "cpu", "--data",
                           str(tmp_path / "data"), "--models", "vgg8", "--epochs", "1", "5", "--setting", "fp32",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out/study.json").read_text())
    assert [(r["model"], r["epochs"]) for r in results["runs"]] == [("vgg8", 1), ("vgg8", 5)]
    assert len(results["runs"][1]["history"]) == 5 and results["total_wall_s"] > 0
    assert len(results["environment"]["data_sha256"]) == 64
    markdown = (tmp_path / "out/study.md").read_text()
    assert "| vgg8 | " in markdown and "| 27.75 |" in markdown and "| 25.13 |" in markdown  # paper, 5 epochs
    assert (tmp_path / "out/learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_dataloader_baseline_trains(tmp_path, image_tree):
    """The baseline loop does the study's work: every image once an epoch, normalised and cropped to
    32x32, and an optimizer step that moves the weights (a loop that only times would pass on times)."""
    import torch

    from benchmarks.baseline import BaselineLoop

    prepare(source=str(image_tree), out_dir=tmp_path / "data")
    arrays, _ = load_prepared(tmp_path / "data")
    loop = BaselineLoop("alexnet", arrays["train_images"], arrays["train_labels"], workers=0, batch_size=16)
    batches = list(loop.loader)
    assert sum(len(y) for _, y in batches) == len(arrays["train_labels"]) == 40
    assert batches[0][0].shape == (16, 3, 32, 32) and batches[0][0].dtype == torch.float32
    assert -3 < float(torch.cat([x for x, _ in batches]).mean()) < 3 and float(batches[0][0].min()) < 0  # normalised
    before = {k: v.clone() for k, v in loop.model.state_dict().items()}
    assert loop.epoch() > 0
    assert not torch.equal(before["features.0.weight"], loop.model.state_dict()["features.0.weight"])
    times = baseline_epoch_seconds("alexnet", arrays["train_images"], arrays["train_labels"], workers=0, epochs=2)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_reference_run_keeps_a_run_in_its_store_with_the_params_and_code_it_ran_with(tmp_path, monkeypatch):
    """A real study's dvc.lock and metrics.json go into its results store, beside the params.yaml
    they ran with, once they agree with the commit that ran them and the store's own params.yaml.
    Files that do not tell one story are refused before anything is written."""
    import hashlib

    import pytest
    import yaml

    from benchmarks.reference_run import keep_reference
    from study.errors import StageError

    for key, value in subprocess_env().items():
        if key.startswith("GIT_"):
            monkeypatch.setenv(key, value)
    repo, run, store = tmp_path / "repo", tmp_path / "run", tmp_path / "repo/results/gpu-2026-11-27"
    (repo / "stages").mkdir(parents=True)
    code = b"print('prepare')\n"
    (repo / "stages/prepare.py").write_bytes(code)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "code"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    ran = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    run.mkdir()
    store.mkdir(parents=True)
    (run / "metrics.json").write_text('{"alexnet": {"acc": 85.55}}')
    lock = {"schema": "2.0", "stages": {"prepare": {
        "cmd": "python -m stages.prepare", "params": {"params.yaml": {"data.source": "../mirror.tar.gz"}},
        "deps": [{"path": "stages/prepare.py", "hash": "md5", "md5": hashlib.md5(code).hexdigest()}]}}}
    (run / "dvc.lock").write_text(yaml.safe_dump(lock))

    # a lock that names a data source its params.yaml does not, code the commit does not hold, a
    # store matched against other parameters
    (run / "params.yaml").write_text("data:\n  source: official\n")
    with pytest.raises(StageError, match="data.source is '../mirror.tar.gz' in dvc.lock, 'official' in params.yaml"):
        keep_reference(run, ran, store, repo)
    (run / "params.yaml").write_text("data:\n  source: ../mirror.tar.gz\n")
    (repo / "stages/prepare.py").write_text("print('changed')\n")
    subprocess.run(["git", "commit", "-qam", "changed"], cwd=repo, check=True)
    with pytest.raises(StageError, match="stages/prepare.py at .* is not the file dvc.lock recorded"):
        keep_reference(run, "HEAD", store, repo)
    (store / "params.yaml").write_text("data:\n  source: official\n")
    with pytest.raises(StageError, match="is not the params.yaml the run ran with"):
        keep_reference(run, ran, store, repo)
    assert sorted(p.name for p in store.iterdir()) == ["params.yaml"]

    (store / "params.yaml").write_text("data: {source: ../mirror.tar.gz}  # the same values\n")
    assert keep_reference(run, ran, store, repo) == [store / "dvc.lock", store / "metrics.json"]
    assert (store / "dvc.lock").read_text() == (run / "dvc.lock").read_text()
    assert (store / "metrics.json").read_text() == '{"alexnet": {"acc": 85.55}}'
    assert (store / "params.yaml").read_text().endswith("# the same values\n")  # the store's own, untouched


def test_cpu_step_benchmark_times_each_lever_in_its_own_process(tmp_path, image_tree):
    prepare(source=str(image_tree), out_dir=tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cpu_step", "--data", str(tmp_path / "data"), "--models",
                           "vgg8", "--batch-size", "4", "--threads", "1", "--warmup", "1", "--steps", "2",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=subprocess_env(),
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out/cpu_step.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["before (per-tensor SGD, glibc's default)", "fused SGD",
                                            "fused SGD + freed memory reused (the trainer's)"]
    # each setting in its own process: the allocator's setting reaches the last one alone
    assert [r["memory_reuse_applied"] for r in rows] == [False, False, platform.libc_ver()[0] == "glibc"]
    assert all(r["step_ms"] > 0 and r["page_faults_per_step"] >= 0 for r in rows)
    assert "| vgg8 | fused SGD | " in (tmp_path / "out/cpu_step.md").read_text()
