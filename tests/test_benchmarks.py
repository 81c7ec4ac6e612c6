import json
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


def test_reference_tag_keeps_a_run_with_the_params_and_code_it_ran_with(tmp_path, monkeypatch):
    """A real study's dvc.lock and metrics.json are tagged on the commit that ran them, beside the
    params.yaml they ran with, and kept in the branch's history; the branch's own files stay as
    they were. Files that do not tell one story are refused before anything is written."""
    import hashlib

    import pytest
    import yaml

    from benchmarks.reference_tag import tag_reference
    from study.errors import StageError

    for key, value in subprocess_env().items():
        if key.startswith("GIT_"):
            monkeypatch.setenv(key, value)
    repo, run = tmp_path / "repo", tmp_path / "run"
    (repo / "stages").mkdir(parents=True)
    code = b"print('prepare')\n"
    (repo / "stages/prepare.py").write_bytes(code)
    (repo / "params.yaml").write_text("data:\n  source: official\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "code"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    ran = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    run.mkdir()
    (run / "params.yaml").write_text("data:\n  source: ../mirror.tar.gz\n")
    (run / "metrics.json").write_text('{"alexnet": {"acc": 85.55}}')
    lock = {"schema": "2.0", "stages": {"prepare": {
        "cmd": "python -m stages.prepare", "params": {"params.yaml": {"data.source": "../mirror.tar.gz"}},
        "deps": [{"path": "stages/prepare.py", "hash": "md5", "md5": hashlib.md5(code).hexdigest()}]}}}
    (run / "dvc.lock").write_text(yaml.safe_dump(lock))

    def show(rev, path):
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True).stdout

    # a lock that names a data source its params.yaml does not, or code the commit does not hold
    (run / "params.yaml").write_text("data:\n  source: official\n")
    with pytest.raises(StageError, match="data.source is '../mirror.tar.gz' in dvc.lock, 'official' in params.yaml"):
        tag_reference(run, ran, "ref", repo)
    (run / "params.yaml").write_text("data:\n  source: ../mirror.tar.gz\n")
    (repo / "stages/prepare.py").write_text("print('changed')\n")
    subprocess.run(["git", "commit", "-qam", "changed"], cwd=repo, check=True)
    with pytest.raises(StageError, match="stages/prepare.py at .* is not the file dvc.lock recorded"):
        tag_reference(run, "HEAD", "ref", repo)
    assert not subprocess.run(["git", "tag"], cwd=repo, capture_output=True, text=True).stdout

    head = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], cwd=repo, capture_output=True, text=True).stdout
    reference = tag_reference(run, ran, "ref", repo, date="2026-11-27T19:11:15Z")
    assert show("ref", "params.yaml") == "data:\n  source: ../mirror.tar.gz\n"
    assert show("ref", "dvc.lock") == (run / "dvc.lock").read_text()
    assert show("ref", "stages/prepare.py") == code.decode()
    parents = subprocess.run(["git", "rev-parse", f"{reference}^@"], cwd=repo, capture_output=True, text=True)
    assert parents.stdout.split() == [ran]
    assert subprocess.run(["git", "merge-base", "--is-ancestor", reference, "HEAD"], cwd=repo).returncode == 0
    assert subprocess.run(["git", "rev-parse", "HEAD^{tree}"], cwd=repo, capture_output=True, text=True).stdout == head
    dated = subprocess.run(["git", "log", "-1", "--format=%cI", "ref"], cwd=repo, capture_output=True, text=True)
    assert dated.stdout.strip() == "2026-11-27T19:11:15+00:00"
