"""A committed results store (results/<device>-<date>/: the MLflow store of a real study,
its params.yaml and the report built from it) rebuilds its report on a CPU-only machine,
from the store alone, with every number of the committed tables unchanged."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, subprocess_env

STORES = sorted(p.parent for p in (ROOT / "results").glob("*/mlflow.db"))
TABLES = ("table5_accuracy", "table6_seconds_per_epoch", "table7_parameter_efficiency", "seed_values", "ablation")


def test_there_is_a_committed_store():
    assert STORES, "no results/*/mlflow.db committed"


@pytest.mark.parametrize("store", STORES, ids=[s.name for s in STORES])
def test_the_report_rebuilds_from_the_store_alone(store, tmp_path):
    copy = tmp_path / store.name
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("report"))
    proc = subprocess.run([sys.executable, "-m", "stages.report", "--store", str(copy)], cwd=ROOT,
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "logged" not in proc.stdout  # every record in the store already has its run
    db = (copy / "mlflow.db").resolve()
    assert (f"the runs in MLflow: `mlflow ui --backend-store-uri sqlite:///{db}`, then "
            "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning") in proc.stdout
    for name in TABLES:
        committed = pd.read_csv(store / "report/tables" / f"{name}.csv", dtype=str)
        rebuilt = pd.read_csv(copy / "report/tables" / f"{name}.csv", dtype=str)
        pd.testing.assert_frame_equal(rebuilt, committed, obj=name)
    table5 = pd.read_csv(copy / "report/tables/table5_accuracy.csv", dtype=str)
    assert not table5.apply(lambda column: column.str.contains("not run")).any().any(), table5
    for cell in table5.filter(like="ours").stack():
        assert "(n=" in cell, cell  # at least two seeds behind every number
