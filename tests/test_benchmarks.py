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
    prepare(source=str(image_tree), out_dir=tmp_path / "data")
    arrays, _ = load_prepared(tmp_path / "data")
    times = baseline_epoch_seconds("alexnet", arrays["train_images"], arrays["train_labels"], workers=0, epochs=2)
    assert len(times) == 2 and all(t > 0 for t in times)
