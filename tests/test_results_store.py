"""A committed results store (results/<device>-<date>/: the MLflow store of a real study,
its params.yaml and the report built from it) rebuilds its report on a CPU-only machine,
from the store alone, with every number of the committed tables unchanged; and served with
the command its README gives, wherever it is copied, it serves every run's files over HTTP."""

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from conftest import ROOT, free_port, stop_server, subprocess_env

from benchmarks.portable_store import make_portable

STORES = sorted(p.parent for p in (ROOT / "results").glob("*/mlflow.db"))
TABLES = ("table5_accuracy", "table6_seconds_per_epoch", "table7_parameter_efficiency", "seed_values", "ablation",
          "jpeg_cost", "claims", "claims_absolute")
FEWEST_SEEDS = {"h200-2026-11-27": 3}  # seeds behind every number of Table 5; else 2


def test_there_is_a_committed_store():
    # the stores named here are parametrized by name, never by what a glob finds: a renamed store fails
    assert STORES, "no results/*/mlflow.db committed"
    assert {*CONTENT, *FEWEST_SEEDS} <= {s.name for s in STORES}, sorted(s.name for s in STORES)


def file_digests(folder):
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("store", STORES, ids=[s.name for s in STORES])
def test_the_report_rebuilds_from_the_store_alone(store, tmp_path):
    """Every number of the committed tables again, from the store alone, which is only read: not a
    byte of it changes and nothing is added to it (before: its mlflow.db gained a row and a lock)."""
    copy = tmp_path / store.name
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("report"))
    before = file_digests(copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # read-only, as a checkout may be
    # one store to a folder named with --out, the other to the default, reports/<store> under the working folder
    named = store.name == "h200-2026-11-27"
    out = tmp_path / "rebuilt" if named else tmp_path / "reports" / store.name
    proc = subprocess.run([sys.executable, "-m", "stages.report", "--store", str(copy),
                           *(["--out", str(out)] if named else [])], cwd=ROOT if named else tmp_path,
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert proc.returncode == 0, proc.stderr
    assert file_digests(copy) == before, "reading the store wrote into it"
    assert proc.stdout.startswith(f"wrote {out if named else f'reports/{store.name}'}/report.md: "), proc.stdout
    assert "logged" not in proc.stdout  # every record in the store already has its run
    db = (copy / "mlflow.db").resolve()
    assert (f"the runs in MLflow: `mlflow server --backend-store-uri sqlite:///{db} --serve-artifacts "
            f"--artifacts-destination {copy.resolve() / 'mlartifacts'}`, then "
            "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning") in proc.stdout
    for name in TABLES:
        committed = pd.read_csv(store / "report/tables" / f"{name}.csv", dtype=str)
        rebuilt = pd.read_csv(out / "tables" / f"{name}.csv", dtype=str)
        pd.testing.assert_frame_equal(rebuilt, committed, obj=name)
    table5 = pd.read_csv(out / "tables/table5_accuracy.csv", dtype=str)
    assert not table5.apply(lambda column: column.str.contains("not run")).any().any(), table5
    for cell in table5.filter(like="ours").stack():
        assert int(re.search(r"\(n=(\d+)\)", cell).group(1)) >= FEWEST_SEEDS.get(store.name, 2), cell
    # the paper's conclusion 2 in its own words, never softened into a margin: not supported by these seeds
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if "VGG-8 outperforms AlexNet" in line)
    assert row.startswith('| "Despite having fewer parameters, VGG-8 outperforms AlexNet" | §8, 2; §6.3 | ')
    assert "| the paper's |" in row
    assert "| **not supported**; the observed gap lies against the claim" in row


def holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: sorted p times (m - rank), running maximum, capped at 1."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def recipe_runs_by_sqlite(db_path) -> pd.DataFrame:
    """The recipe's runs read from mlflow.db with sqlite alone: finished, on the mirror (no re-encoded
    -q variant), default init; the latest per model, epochs and seed."""
    query = """select r.run_uuid as run_id, r.start_time,
        max(case when p.key = 'model' then p.value end) as model,
        cast(max(case when p.key = 'epochs' then p.value end) as int) as epochs,
        cast(max(case when p.key = 'seed' then p.value end) as int) as seed,
        max(case when p.key = 'data.source' then p.value end) as source,
        max(case when p.key = 'train.init' then p.value end) as init,
        cast(max(case when p.key = 'num_parameters' then p.value end) as real) as parameters,
        (select value from latest_metrics m where m.run_uuid = r.run_uuid and m.key = 'final_test_acc') as acc
        from runs r join params p on p.run_uuid = r.run_uuid where r.status = 'FINISHED' group by r.run_uuid"""
    with sqlite3.connect(db_path) as db:
        runs = pd.read_sql_query(query, db)
    runs = runs[~runs["source"].str.contains("-q") & (runs["init"] == "default")]
    return runs.sort_values("start_time").groupby(["model", "epochs", "seed"]).tail(1)


def test_every_number_of_the_h200_ledger_is_recomputed_from_mlflow_db_with_scipy_alone():
    """The ledger of the committed H200 report (claims.csv, claims_absolute.csv) from mlflow.db read with
    sqlite and computed with scipy, no project code: every gap, interval, Holm-corrected p (for and against,
    family sizes), verdict, and Table 5's one-run intervals; README's count is the ledger's."""
    import math

    from scipy import stats

    store = ROOT / "results/h200-2026-11-27"
    runs = recipe_runs_by_sqlite(store / "mlflow.db")
    seeds = pd.read_csv(store / "report/tables/seed_values.csv")
    assert set(runs["run_id"]) == set(seeds["run_id"])  # the same runs as the report chose

    def values(model, epochs, metric="acc"):
        cell = runs[(runs["model"] == model) & (runs["epochs"] == epochs)]
        return list(cell["acc"]) if metric == "acc" else list(cell["parameters"] / cell["acc"] / 1e3)

    def one_sided(side, against=False):
        a_model, b_model, a_epochs, b_epochs, want, threshold, metric = side
        a, b = values(a_model, a_epochs, metric), values(b_model, b_epochs, metric)
        if want == "within":
            shifted = [stats.ttest_ind([x - s for x in a], b, equal_var=False, alternative=alt).pvalue
                       for s, alt in ((-threshold, "greater"), (threshold, "less"))]
            outside = [1 - p for p in shifted]  # beyond the margin on either side (continuous t)
            return min(1.0, 2 * min(outside)) if against else max(shifted)
        alternative = {"greater": "less", "less": "greater"}[want] if against else want
        return stats.ttest_ind([x - threshold for x in a], b, equal_var=False, alternative=alternative).pvalue

    def sides(pairs, epochs=40, want="greater", metric="acc", threshold=0.0):
        return tuple((a, b, epochs, epochs, want, threshold, metric) for a, b in pairs)

    ranking = tuple(side for a, b in (("vgg16_bn", "alexnet"), ("vgg16_bn", "vgg8"), ("alexnet", "vgg8"))
                    for side in sides([(a, b)], 5) + sides([(a, b)], 40))
    papers = {"significantly outperforms other": sides([("vgg16_bn", m) for m in ("alexnet", "vgg8", "vgg16")]),
              "higher than AlexNet or VGG-8": sides([("vgg16_bn", "alexnet"), ("vgg16_bn", "vgg8")]),
              "additional depth": sides([("vgg16_bn", "vgg8")]),
              "VGG-8 outperforms AlexNet": sides([("vgg8", "alexnet")]),
              "comparable performance": sides([("vgg8", "alexnet")], want="within", threshold=1.0),
              "slower initial learning": sides([("vgg8", "alexnet")], 5, "less"),
              "strong indicator": ranking,
              "superior learning dynamics": sides([("vgg16_bn", m) for m in ("alexnet", "vgg8", "vgg16")], 5),
              "most parameter-efficient": sides([("vgg8", m) for m in ("alexnet", "vgg16_bn", "vgg16")],
                                                want="less", metric="per_point"),
              "less parameter-efficient": sides([("vgg16_bn", "vgg8"), ("vgg16_bn", "alexnet")], metric="per_point")}
    fors = [max(one_sided(s) for s in test) for test in papers.values()]
    againsts = [min(1.0, len(test) * min(one_sided(s, True) for s in test)) for test in papers.values()]
    adjusted = dict(zip(papers, zip(holm_by_hand(fors), holm_by_hand(againsts), strict=True), strict=True))
    ours = sides([("vgg8", "alexnet")], threshold=-1.0)  # our "catches up": a family of one
    # (quote, family key, is ours): the paper's "catches up" is the same test as "outperforms", counted once
    rows = [(w, w, False) for w in papers] + [("catches up", "VGG-8 outperforms AlexNet", False),
                                               ("catches up", None, True)]
    claims = pd.read_csv(store / "report/tables/claims.csv", dtype=str)
    for words, key, is_ours in rows:
        test = ours if is_ours else papers[key]
        [row] = [r for _, r in claims.iterrows() if words in r["the paper's claim"]
                 and r["reading"].startswith("ours") == is_ours]
        p_yes, p_no = (one_sided(test[0]), one_sided(test[0], True)) if is_ours else adjusted[key]
        size = "(1)" if is_ours else f"({len(papers)})"
        for column, expected in (("p for (Holm, family)", p_yes), ("p against (Holm, family)", p_no)):
            printed, family = row[column].split(" ")
            assert family == size and float(printed) == pytest.approx(expected, rel=0.006, abs=1e-12), (words, column)
        for side, gap, interval in zip(test, row["gap"].split("; "), row["95% interval"].split("; "), strict=True):
            a, b = values(side[0], side[2], side[6]), values(side[1], side[3], side[6])
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            digits = 0 if side[6] == "per_point" else 2
            assert float(gap.split(": ")[1]) == pytest.approx(stats.tmean(a) - stats.tmean(b), abs=0.51 * 10**-digits)
            low, high = (float(x) for x in interval.strip("[]").split(", "))
            assert (low, high) == pytest.approx((ci.low, ci.high), abs=0.51 * 10**-digits), (words, interval)
        inside = all({"greater": lambda g, t: g > t, "less": lambda g, t: g < t, "within": lambda g, t: abs(g) < t}[
            s[4]](stats.tmean(values(s[0], s[2], s[6])) - stats.tmean(values(s[1], s[3], s[6])), s[5]) for s in test)
        word = "reproduced" if p_yes < 0.05 else "**contradicted**" if p_no < 0.05 else \
            "not decided" if inside else "**not supported**"
        assert row["verdict"].split(";")[0] == word, (words, row["verdict"])
    assert claims.loc[claims["the paper's claim"].str.contains("VGG-8 outperforms AlexNet"), "verdict"].str.startswith(
        "**not supported**").all()
    # Table 5 judged cell by cell: the paper's run against one new run (seeds' sd and its test-set noise)
    absolute = pd.read_csv(store / "report/tables/claims_absolute.csv", dtype=str)
    paper = {("AlexNet", 5): 56.84, ("AlexNet", 40): 87.81, ("VGG-16 with BN", 5): 83.86, ("VGG-16 with BN", 40): 91.94,
             ("VGG-8", 5): 27.75, ("VGG-8", 40): 88.32}
    names = {"AlexNet": "alexnet", "VGG-16 with BN": "vgg16_bn", "VGG-8": "vgg8"}
    tested = {}
    for (name, epochs), theirs in paper.items():
        a = values(names[name], epochs)
        q = 100 * math.sqrt(theirs / 100 * (1 - theirs / 100) / 10_000)
        seed_part = stats.tvar(a) * (1 + 1 / len(a))
        variance, df = seed_part + q**2, (seed_part + q**2) ** 2 / (seed_part**2 / (len(a) - 1))
        tested[(name, epochs)] = 2 * stats.t.sf(abs(theirs - stats.tmean(a)) / math.sqrt(variance), df)
        half = stats.t.ppf(0.975, df) * math.sqrt(variance)
        [row] = [r for _, r in absolute.iterrows() if (r["model"], int(r["epochs"])) == (name, epochs)]
        low, high = (float(x) for x in row["95% interval for one run"].strip("[]").split(", "))
        assert (low, high) == pytest.approx((max(stats.tmean(a) - half, 0), stats.tmean(a) + half), abs=0.0051)
        assert float(row["test-set sd"]) == pytest.approx(q, abs=0.0051)
    for cell, holm_p in zip(tested, holm_by_hand(list(tested.values())), strict=True):
        [row] = [r for _, r in absolute.iterrows() if (r["model"], int(r["epochs"])) == cell]
        assert float(row["p (Holm, family)"].split(" ")[0]) == pytest.approx(holm_p, rel=0.006), cell
        assert row["verdict"].startswith("**contradicted**") == (holm_p < 0.05), cell
    # README's summary is the ledger's count
    count = next(line for line in (store / "report/report.md").read_text().splitlines()
                 if line.startswith("On the paper's own readings"))
    assert count in " ".join((ROOT / "README.md").read_text().split()), count


# what a store logged with the current code holds beyond the tables: per store, the runs its
# README names as cut before their evaluation, how many models it logged (weights not committed),
# and the runs it must hold: three seeds of every model at 5 and 40 epochs, the Kaiming ablation,
# AlexNet and VGG-16-BN on the two JPEG variants with two seeds
H200_RUNS = ({f"{m}-e{e}-s{s}" for m in ("alexnet", "vgg16", "vgg16_bn", "vgg8") for e in (5, 40) for s in (0, 1, 2)}
             | {"vgg16-e40-s0-init_kaiming"}
             | {f"{m}-e40-s{s}-jpeg_q{q}" for m in ("alexnet", "vgg16_bn") for q in (50, 25) for s in (0, 1)})
CONTENT = {"h200-2026-11-27": {"not_evaluated": set(), "models": 4,
                               "runs": H200_RUNS}}


@pytest.mark.parametrize("store", [ROOT / "results" / name for name in CONTENT], ids=lambda s: s.name)
def test_the_study_runs_carry_what_an_mlflow_user_expects(store):
    expected = CONTENT[store.name]
    with sqlite3.connect(store / "mlflow.db") as con:
        runs = dict(con.execute("select run_uuid, name from runs where status = 'FINISHED'").fetchall())
        uris = dict(con.execute("select run_uuid, artifact_uri from runs").fetchall())

        def having(sql: str) -> set[str]:
            return {row[0] for row in con.execute(sql)}

        gpu_metrics = having("select distinct run_uuid from metrics where key like 'system/gpu%'")
        described = having("select run_uuid from tags where key = 'mlflow.note.content' and value != ''")
        with_data = having("select destination_id from inputs where destination_type = 'RUN'")
        evaluated = having("select distinct run_uuid from metrics where key = 'eval/test_acc'")
        models = con.execute("select count(*) from logged_models").fetchone()[0]
    con.close()
    assert runs and len(set(runs.values())) == len(runs), sorted(runs.values())  # names say what differs
    assert not expected["runs"] - set(runs.values()), sorted(expected["runs"] - set(runs.values()))
    for what, found in (("GPU system metrics", gpu_metrics), ("a description", described), ("a dataset", with_data)):
        assert not set(runs) - found, f"runs without {what}: {sorted(runs[r] for r in set(runs) - found)}"
    assert {runs[r] for r in set(runs) - evaluated} == expected["not_evaluated"]
    for run in set(runs) & evaluated:
        folder = store / "mlartifacts" / uris[run].removeprefix("mlflow-artifacts:/")
        figures = sorted(p.name for p in (folder / "figures").glob("*.png"))
        assert figures == ["confusion.png", "feature_maps.png", "filters.png", "learning_curve.png"], runs[run]
    assert models == expected["models"]


@pytest.mark.parametrize("store", [ROOT / "results" / name for name in CONTENT], ids=lambda s: s.name)
def test_the_store_names_its_models_and_datasets_and_registers_nothing_without_weights(store):
    """The committed store as benchmarks/store_upgrade.py left it: a model without weights says so
    and how to get them back, datasets are named by source and split with the source as set, and the
    registry is empty: no version claims a model that cannot load here."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("alexnet-vgg-cifar10")
    logged = client.search_logged_models([experiment.experiment_id])
    assert sorted(m.name for m in logged) == ["alexnet-e40", "vgg16-e40", "vgg16_bn-e40", "vgg8-e40"]
    for model in logged:  # no weights in git: never "Ready", the why and the command where the UI shows it
        network = model.name.removesuffix("-e40")
        assert model.status.to_int() == mlflow.entities.LoggedModelStatus.FAILED.to_int()
        assert f"`dvc repro evaluate@{network}`" in model.status_message == model.tags["weights"]
        assert "checkpoint_sha256_unchecked" not in model.tags
        assert model.tags["mlflow.note.content"] == f"**Does not load here:** {model.status_message}."  # Description
        assert "mlflow.modelVersions" not in model.tags  # its page names no version
    with sqlite3.connect(store / "mlflow.db") as con:
        datasets = con.execute("select name, dataset_source, dataset_schema from datasets").fetchall()
    con.close()
    assert sorted(name for name, _, _ in datasets) == sorted(
        f"cifar10-jpeg{q}-{split}" for q in ("", "-q50", "-q25") for split in ("train", "test"))
    for name, source, schema in datasets:
        uri = json.loads(source)["uri"]
        assert uri in ("../shared/data/cifar10-jpeg.tar.gz", ".device/gpu/cifar10-jpeg-q50.tar.gz",
                       ".device/gpu/cifar10-jpeg-q25.tar.gz"), (name, uri)
        assert json.loads(schema)["mlflow_colspec"][0]["tensor-spec"]["shape"] == [-1, 32, 32, 3]
    assert client.search_registered_models() == []
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if "DVC experiment `-`" in r.data.tags["mlflow.note.content"]]
    assert not [r for r in runs if r.data.tags.get("dvc_exp_name") == ""]


@pytest.mark.parametrize("store", [ROOT / "results" / name for name in CONTENT], ids=lambda s: s.name)
def test_the_store_upgrade_is_done_and_changes_nothing_more(store, tmp_path):
    """Run again on the committed store, the upgrade renames, re-points and unregisters nothing."""
    from benchmarks.store_upgrade import upgrade

    copy = tmp_path / store.name
    copy.mkdir()
    for name in ("mlflow.db", "params.yaml"):
        shutil.copy(store / name, copy / name)
    lines = upgrade(copy)
    assert not [line for line in lines if line.startswith(("dataset ", "unregistered "))], lines
    assert all(line.split(": ", 1)[1].split(",")[0] in (f"{n} -> {n}" for n in (
        "alexnet-e40", "vgg16-e40", "vgg16_bn-e40", "vgg8-e40")) for line in lines if line.startswith("model ")), lines


def served_command(store) -> list[str]:
    """The one command the store's README gives to serve it (relative paths, from the repo root)."""
    readme = (store / "README.md").read_text()
    found = re.findall(r"^mlflow server [^\n]*--artifacts-destination [^\n#]*", readme, flags=re.M)
    assert len(found) == 1, f"{store}/README.md gives no single `mlflow server ... --artifacts-destination` line"
    command = shlex.split(found[0])
    assert f"sqlite:///results/{store.name}/mlflow.db" in command, command
    assert command[command.index("--artifacts-destination") + 1] == f"results/{store.name}/mlartifacts", command
    return command


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.mark.parametrize("store", STORES, ids=[s.name for s in STORES])
def test_the_store_serves_its_artifacts_wherever_it_is_copied(store, tmp_path):
    copy = tmp_path / "elsewhere" / "results" / store.name  # not the folder any run was logged from
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("report"))
    assert make_portable(copy) == []  # committed portable: nothing left to rewrite
    with sqlite3.connect(copy / "mlflow.db") as con:
        runs = con.execute("select run_uuid, artifact_uri from runs where status = 'FINISHED'").fetchall()
    assert runs and all(uri.startswith("mlflow-artifacts:/") for _, uri in runs), runs

    port = free_port()
    server = subprocess.Popen([*served_command(store), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=copy.parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=subprocess_env())
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                get(f"{base}/health")
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        figures = 0
        for run_id, uri in runs:  # what the UI's Artifacts tab asks for: the listing, then a file
            listing = json.loads(get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}"))
            names = {f["path"] for f in listing.get("files", [])}
            assert "record.json" in names, (run_id, listing)
            record = json.loads(get(f"{base}/get-artifact?path=record.json&run_uuid={run_id}"))
            on_disk = copy / "mlartifacts" / uri.removeprefix("mlflow-artifacts:/") / "record.json"
            assert record == json.loads(on_disk.read_text()) and record["record_id"], run_id
            if "figures" in names:
                listing = json.loads(get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run_id}&path=figures"))
                png = next(f["path"] for f in listing["files"] if f["path"].endswith(".png"))
                assert get(f"{base}/get-artifact?path={png}&run_uuid={run_id}")[:4] == b"\x89PNG", png
                figures += 1
        artifacts = [copy / "mlartifacts" / uri.removeprefix("mlflow-artifacts:/") for _, uri in runs]
        assert figures == sum((a / "figures").is_dir() for a in artifacts)  # every run's figures are served
    finally:
        stop_server(server)


def test_a_store_logged_with_local_paths_is_made_portable(tmp_path):
    import mlflow

    from study.errors import StageError

    origin = tmp_path / "machine"  # where it was logged: file:// URIs into machine/mlartifacts
    client = mlflow.MlflowClient(f"sqlite:///{origin / 'mlflow.db'}")
    experiment = client.create_experiment("study", artifact_location=(origin / "mlartifacts").as_uri())
    run = client.create_run(experiment).info.run_id
    (tmp_path / "record.json").write_text('{"record_id": "r1"}')
    client.log_artifact(run, str(tmp_path / "record.json"))
    client.set_terminated(run, "FINISHED")
    store = tmp_path / "results" / "copy"
    shutil.copytree(origin, store)

    lines = make_portable(store)
    old_uri = f"{(origin / 'mlartifacts').as_uri()}/{run}/artifacts"
    assert f"run {run}: {old_uri} -> mlflow-artifacts:/{run}/artifacts" in lines
    with sqlite3.connect(store / "mlflow.db") as con:
        uris = [u for (u,) in con.execute("select artifact_uri from runs")]
        locations = dict(con.execute("select name, artifact_location from experiments"))
    assert uris == [f"mlflow-artifacts:/{run}/artifacts"] and locations["study"] == "mlflow-artifacts:/"
    assert make_portable(store) == []  # a second pass has nothing to do

    lost = tmp_path / "lost"  # a finished run whose files were not copied: named, nothing rewritten
    shutil.copytree(origin, lost, ignore=shutil.ignore_patterns("mlartifacts"))
    before = (lost / "mlflow.db").read_bytes()
    with pytest.raises(StageError, match=f"run {run} finished but .* is missing"):
        make_portable(lost)
    assert (lost / "mlflow.db").read_bytes() == before


@pytest.mark.parametrize(("args", "line"), [
    (["--out", "x"], "error: --out goes with --store; the pipeline's own report is reports/report.md"),
    (["--store", "STORE", "--params", "other.yaml"],
     "error: --params goes without --store: a results store is read with its own params.yaml"),
    (["--store", "STORE", "--out", "a-file"], "error: a-file is a file; give --out a folder for the report"),
], ids=["out alone", "params with a store", "out a file"])
def test_a_store_report_refuses_options_that_do_not_fit_in_one_line(tmp_path, args, line):
    (tmp_path / "a-file").write_text("mine")
    args = [str(ROOT / "results/h100-2026-11-27") if a == "STORE" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "stages.report", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().startswith(line), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and (tmp_path / "a-file").read_text() == "mine"


def test_the_two_stores_side_by_side_regenerate_from_their_tables(tmp_path):
    """results/across_machines.csv is what benchmarks/across_machines.py writes from the two
    committed stores' tables; the seeds both ran (0 and 1) are paired, the difference is Welch's."""
    from scipy import stats

    from benchmarks.across_machines import compare, write

    first, second = ROOT / "results/h200-2026-11-27", ROOT / "results/h100-2026-11-27"
    path = write(compare(first, second), first, second, tmp_path / "across_machines")
    committed = pd.read_csv(ROOT / "results/across_machines.csv", dtype=str)
    pd.testing.assert_frame_equal(pd.read_csv(path.with_suffix(".csv"), dtype=str), committed)
    row = committed[(committed["model"] == "VGG-16 with BN") & (committed["epochs"] == "40")].iloc[0]
    h200 = pd.read_csv(first / "report/tables/seed_values.csv").query("model == 'vgg16_bn' and epochs == 40")
    h100 = pd.read_csv(second / "report/tables/seed_values.csv").query("model == 'vgg16_bn' and epochs == 40")
    ci = stats.ttest_ind(h200["final_test_acc"], h100["final_test_acc"], equal_var=False).confidence_interval()
    assert row["95% interval"] == f"[{ci.low:+.2f}, {ci.high:+.2f}]"
    paired = dict(zip(h100["seed"], h100["final_test_acc"], strict=True))
    assert row["same seed, first − second"] == ", ".join(
        f"{s}: {a - paired[s]:+.2f}" for s, a in zip(h200["seed"], h200["final_test_acc"], strict=True) if s in paired)


@pytest.mark.parametrize("store", STORES, ids=[s.name for s in STORES])
def test_a_committed_store_names_no_machine_path_as_a_runs_source(store):
    """mlflow.source.name is the repository's name (benchmarks/store_upgrade.py --step source_name),
    and every run carries its data's identity (--step data_identity)."""
    with sqlite3.connect(store / "mlflow.db") as db:
        sources = {value for (value,) in db.execute("select value from tags where key = 'mlflow.source.name'")}
        runs = db.execute("select count(*) from runs").fetchone()[0]
        identified = db.execute("select count(*) from params where key = 'data.jpeg_quality'").fetchone()[0]
    db.close()
    assert sources == {"alexnet-vgg-cifar10"} and identified == runs

