"""Load test of the team's tracking server: one `mlflow server --app-name basic-auth` on loopback,
N concurrent writer processes that log as the train stage does, against SQLite and PostgreSQL.

Each writer is a real process with its own MLflow user (EDIT on the study's experiment). It opens
a run with the train stage's params and tags, logs the six per-epoch metrics through the train
stage's own ``TrainingRun`` (which rides out a busy server) every ``--epoch-s`` seconds (a GPU's
rate: VGG-16-BN trains an epoch in about 1 s on an H100), samples system metrics every 5 s with
MLflow's monitor, and at the end logs the summary and its three record files as artifacts, then
ends the run. Every HTTP request it makes is timed on the client (loopback: the server's own
latency plus a few tens of microseconds). The admin then reads every run back and counts what is
missing. For each backend, N grows through ``--writers`` until a step loses a metric or errs.

    python -m benchmarks.server_load --out benchmarks/results/server-load-<cpu>-<date>

PostgreSQL is Debian's `postgresql` package (initdb, pg_ctl on PATH or in /usr/lib/postgresql/*/bin),
started here in a temporary folder (as the `postgres` user when run as root); needs
`pip install -e '.[server]'` (mlflow[auth], psycopg2-binary).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = "alexnet-vgg-cifar10"
ADMIN = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "load-test-admin-" + os.urandom(6).hex()}
SYSTEM_METRICS_S = 5  # the train stage's sampling interval (study/tracking/content.py)
STATUS = re.compile(r"too many (\d{3}) error responses|error code (\d{3})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before opening port {port}")
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not open port {port} in {timeout:.0f} s")


# ---------------------------------------------------------------- PostgreSQL in a temporary folder
def _pg_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if not found:
        sys.exit(f"error: PostgreSQL's {name} not found; install Debian's `postgresql` (apt-get install postgresql)")
    return found


@contextlib.contextmanager
def postgresql(folder: Path):
    """A throw-away PostgreSQL cluster on loopback; yields its SQLAlchemy URI prefix."""
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    data, port = folder / "pgdata", _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    if as_pg:
        shutil.chown(folder, "postgres")
    subprocess.run([*as_pg, _pg_tool("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on"
    subprocess.run([*as_pg, _pg_tool("pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-o",
                    options, "start"], check=True, capture_output=True)
    try:
        for db in ("mlflow", "mlflow_auth"):
            subprocess.run([*as_pg, _pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db],
                           check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        subprocess.run([*as_pg, _pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)


# ---------------------------------------------------------------- the team's server
@contextlib.contextmanager
def team_server(folder: Path, backend: str, auth_cache_s: int = 60):
    """The basic-auth server as docs/team.md runs it (default 4 workers); yields its URI.
    ``auth_cache_s``: basic_auth.ini's auth_cache_ttl_seconds (MLflow's default 0: every request
    pays the PBKDF2 password check)."""
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            store, auth_db = f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'basic_auth.db'}"
        else:
            prefix = stack.enter_context(postgresql(folder / "postgres"))
            store, auth_db = f"{prefix}/mlflow", f"{prefix}/mlflow_auth"
        config = folder / "basic_auth.ini"
        config.write_text(f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = {auth_db}\n"
                          f"admin_username = {ADMIN['MLFLOW_TRACKING_USERNAME']}\n"
                          f"auth_cache_ttl_seconds = {auth_cache_s}\n")
        port = _free_port()
        env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD":
               ADMIN["MLFLOW_TRACKING_PASSWORD"], "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
               "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # as docs/team.md's
        log = (folder / "server.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host",
                                 "127.0.0.1", "--port", str(port), "--backend-store-uri", store, "--serve-artifacts",
                                 "--artifacts-destination", str(folder / "artifacts")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            _wait_port(port, proc, "mlflow server")
            yield f"http://127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            log.close()


@contextlib.contextmanager
def as_user(credentials: dict[str, str]):
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def writer_credentials(i: int) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": f"writer{i}", "MLFLOW_TRACKING_PASSWORD": f"writer{i}-load-test-password"}


def set_up_team(uri: str, writers: int, first: int = 0) -> str:
    """The study's experiment (made once) and users writer<first>..writer<writers-1> with EDIT on it."""
    import mlflow
    from mlflow.server.auth.client import AuthServiceClient

    from study.tracking.store import experiment_tags

    with as_user(ADMIN):
        client = mlflow.MlflowClient(uri)
        found = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = found.experiment_id if found else client.create_experiment(EXPERIMENT, tags=experiment_tags())
        admin = AuthServiceClient(uri)
        for i in range(first, writers):
            admin.create_user(writer_credentials(i)["MLFLOW_TRACKING_USERNAME"],
                              writer_credentials(i)["MLFLOW_TRACKING_PASSWORD"])
            admin.grant_user_permission(writer_credentials(i)["MLFLOW_TRACKING_USERNAME"], "experiment",
                                        experiment_id, "EDIT")
    return experiment_id


# ---------------------------------------------------------------- one writer (a subprocess)
def _timed_requests(calls: list, t0: float, server: str) -> None:
    """Time every HTTP request this process makes to ``server`` (MLflow's client, its artifact
    upload, the system-metrics thread): (seconds since t0, method, path, status or -1, duration s)."""
    import requests

    original = requests.Session.request

    def timed(self, method, url, *args, **kwargs):
        if not url.startswith(server):
            return original(self, method, url, *args, **kwargs)
        start, status = time.perf_counter(), -1
        try:
            response = original(self, method, url, *args, **kwargs)
            status = response.status_code
            return response
        except Exception as err:
            found = STATUS.search(str(err))
            status = int(found.group(1) or found.group(2)) if found else -1
            raise
        finally:
            path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
            calls.append((round(start - t0, 3), method, path, status, round(time.perf_counter() - start, 5)))

    requests.Session.request = timed


def synthetic_record(index: int, epochs: int) -> dict:
    """A training record as the train stage writes it (recipe from params.yaml), seed = writer index."""
    from study.config import load_settings
    from study.provenance import git_commit

    settings = load_settings(Path(__file__).resolve().parents[1] / "params.yaml")
    recipe = settings.recipe("vgg16_bn")
    recipe.update(epochs=epochs, seed=index)
    return {"record_id": os.urandom(16).hex(), "recipe": recipe, "num_parameters": 33646666,
            "runtime": {"device": "cuda", "precision": "bf16", "channels_last": True, "compile": False,
                        "cuda_graphs": True},
            "provenance": {"device": "cuda", "device_name": "load-test writer (no GPU: logging only)",
                           "torch_version": "-", "python_version": platform.python_version(),
                           "data_sha256": "0" * 64, "git_commit": git_commit()},
            "experiment": EXPERIMENT, "dvc_exp_name": "", "started_ms": int(time.time() * 1000)}


def run_writer(index: int, epochs: int, epoch_s: float, folder: Path) -> None:
    """Wait for ``folder/go``, then log one training's worth as the train stage does."""
    calls: list = []
    t0 = time.perf_counter()
    _timed_requests(calls, t0, os.environ["MLFLOW_TRACKING_URI"])
    import logging

    from mlflow.entities import Param
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from study.tracking.naming import run_name, run_params, run_tags
    from study.tracking.runs import TrainingRun
    from study.tracking.store import connect

    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
    record = synthetic_record(index, epochs)
    client, experiment_id = connect(EXPERIMENT)
    (folder / f"ready-{index}").touch()
    while not (folder / "go").exists():
        time.sleep(0.05)
    start = float((folder / "go").read_text())
    while time.time() < start:
        time.sleep(0.01)
    began = time.perf_counter()
    run_id = client.create_run(experiment_id, tags=run_tags(record), run_name=run_name(record["recipe"])).info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in run_params(record).items()])
    monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_S)
    monitor.start()
    monitor_start = time.perf_counter()
    run, history = TrainingRun(client, run_id), []
    for epoch in range(1, epochs + 1):
        time.sleep(max(0.0, began + epoch * epoch_s - time.perf_counter()))  # the GPU's epoch
        history.append({"epoch": epoch, "train_loss": 2.3 / epoch, "train_acc": 90 * (1 - 1 / (epoch + 1)),
                        "test_loss": 2.2 / epoch, "test_acc": 88 * (1 - 1 / (epoch + 1)), "lr": 0.01,
                        "epoch_time_s": epoch_s})
        run.log_epoch(history[-1])
    monitor.finish()
    monitor_s = time.perf_counter() - monitor_start
    record.update(history=history, summary={"final_test_acc": history[-1]["test_acc"], "best_test_acc": 88.0,
                                            "final_train_loss": history[-1]["train_loss"],
                                            "mean_epoch_time_s": epoch_s, "mean_epoch_time_s_after_first": epoch_s,
                                            "num_parameters": 33646666})
    artifacts = []
    for name, text in (("record.json", json.dumps(record)), ("history.csv", "epoch\n" * epochs),
                       ("metrics.json", json.dumps(record["summary"]))):
        path = folder / f"w{index}" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        artifacts.append(path)
    run.finish(record, artifacts)
    client.set_terminated(run_id, "FINISHED")
    (folder / f"writer-{index}.json").write_text(json.dumps({
        "run_id": run_id, "wall_s": time.perf_counter() - began, "monitor_s": monitor_s,
        "late_s": time.perf_counter() - began - epochs * epoch_s,  # how long logging held the training up
        "calls": [c for c in calls if c[0] >= began - t0]}))


# ---------------------------------------------------------------- one step: N writers
def read_back(uri: str, run_ids: list[str], epochs: int) -> dict:
    """What the server holds of each writer's run: missing epoch metrics, summary, artifacts."""
    import mlflow

    from study.metrics import EPOCH_METRICS, SUMMARY_METRICS

    lost = {"epoch_metrics": 0, "summary_metrics": 0, "artifacts": 0, "unfinished_runs": 0}
    system_samples = []
    with as_user(ADMIN):
        client = mlflow.MlflowClient(uri)
        for run_id in run_ids:
            run = client.get_run(run_id)
            lost["unfinished_runs"] += run.info.status != "FINISHED"
            for key in EPOCH_METRICS:
                steps = {m.step for m in client.get_metric_history(run_id, key)}
                lost["epoch_metrics"] += len(set(range(1, epochs + 1)) - steps)
            lost["summary_metrics"] += sum(k not in run.data.metrics for k in SUMMARY_METRICS)
            names = {a.path for a in client.list_artifacts(run_id)}
            lost["artifacts"] += len({"record.json", "history.csv", "metrics.json"} - names)
            system_samples.append(len(client.get_metric_history(run_id, "system/cpu_utilization_percentage")))
    return {"lost": lost, "system_samples": sum(system_samples)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run_step(uri: str, n: int, epochs: int, epoch_s: float, folder: Path) -> dict:
    folder.mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server_load", "writer", str(i), "--epochs", str(epochs), "--epoch-s",
             str(epoch_s), "--folder", str(folder)], env={**env, **writer_credentials(i)},
            stdout=(folder / f"writer-{i}.log").open("w"), stderr=subprocess.STDOUT))
    deadline = time.time() + 600
    while len(list(folder.glob("ready-*"))) < n:
        if time.time() > deadline or any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    (folder / "go").write_text(str(time.time() + 1.0))
    codes = [p.wait() for p in procs]
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("writer-*.json"))]
    calls = [c for r in results for c in r["calls"]]
    durations = [c[4] for c in calls]
    epoch_logs = [c[4] for c in calls if c[2].endswith("/runs/log-batch")]
    busy = sum(1 for c in calls if c[3] == 429 or c[3] >= 500)
    failed = [c for c in calls if c[3] == -1 or 400 <= c[3] < 500]
    lines = [line for i in range(n) for line in (folder / f"writer-{i}.log").read_text().splitlines()]
    back = read_back(uri, [r["run_id"] for r in results], epochs)
    # MLflow's monitor publishes one sample per 5 s while the run lives, and stops for good at
    # the first request that fails: samples short of the 5-s intervals were not taken
    back["system_intervals"] = sum(int(r["monitor_s"] // SYSTEM_METRICS_S) for r in results)
    lost = back["lost"]["epoch_metrics"] + back["lost"]["summary_metrics"] + (n - len(results)) * epochs * 6
    step = {"writers": n, "writers_failed": sum(c != 0 for c in codes), "requests": len(calls),
            "busy_responses_ridden_out": busy, "failed_requests": len(failed), "failed_examples": failed[:20],
            "offline_warnings": sum("unreachable" in line for line in lines), **back,
            "lost_metrics": lost, "p50_ms": 1000 * percentile(durations, 50),
            "p99_ms": 1000 * percentile(durations, 99),
            "max_ms": 1000 * max(durations, default=float("nan")),
            "epoch_log_p99_ms": 1000 * percentile(epoch_logs, 99),
            "requests_per_s": len(calls) / max((r["wall_s"] for r in results), default=1),
            "max_late_s": max((r["late_s"] for r in results), default=float("nan"))}
    step["clean"] = (step["writers_failed"] == 0 and lost == 0 and step["failed_requests"] == 0 and
                     step["offline_warnings"] == 0 and not any(back["lost"].values()))
    return step


def server_log_counts(path: Path) -> dict:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {"database_is_locked": text.count("database is locked"), "tracebacks": text.count("Traceback")}


def environment() -> dict:
    import sqlite3

    import mlflow

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    pg = subprocess.run([_pg_tool("postgres"), "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("postgres") or glob.glob("/usr/lib/postgresql/*/bin/postgres") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
            "mlflow": mlflow.__version__, "sqlite": sqlite3.sqlite_version, "postgresql": pg,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown(results: dict) -> str:
    env, lines = results["environment"], []
    lines += [f"# Team server load test ({env['date']})", "",
              f"{env['cpu']}, {env['cores']} cores, load average at start {env['load_average_at_start'][0]:.2f}; "
              f"MLflow {env['mlflow']} basic-auth server (4 workers, auth cache "
              f"{results['auth_cache_ttl_seconds']} s) on loopback; SQLite {env['sqlite']}, "
              f"{env['postgresql']}. Each writer: {results['epochs']} epochs at one per {results['epoch_s']} s, "
              f"6 metrics per epoch, system metrics every {SYSTEM_METRICS_S} s, 3 artifacts at the end. "
              "Latency: every HTTP request of every writer, timed on the client over loopback.", "",
              f"Command: `{results['command']}`", "",
              "| backend | writers | requests | req/s | p50 ms | p99 ms | max ms | busy (ridden out) | failed requests "
              "| lost metrics | system samples / 5-s intervals | late s | clean |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for backend, steps in results["backends"].items():
        for s in steps:
            lines.append(f"| {backend} | {s['writers']} | {s['requests']} | {s['requests_per_s']:.1f} | "
                         f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.0f} | {s['busy_responses_ridden_out']}"
                         f" | {s['failed_requests']} | {s['lost_metrics']} | {s['system_samples']}/"
                         f"{s['system_intervals']} | {s['max_late_s']:.1f} | "
                         f"{'yes' if s['clean'] else 'NO'} |")
    if not results.get("complete"):
        lines += ["", "**Incomplete: the run was still going (or was stopped) when this was written.**"]
    lines += ["", "Largest N with no error and no lost metric: " + ", ".join(
        f"{b}: {results['largest_clean'][b] if results['largest_clean'][b] is not None else 'none'}"
        f"{'' if results['stopped'][b] else ' (every N tried was clean)'}" for b in results["backends"]) + "."]
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command_name")
    writer = sub.add_parser("writer")
    writer.add_argument("index", type=int)
    for p in (parser, writer):
        p.add_argument("--epochs", type=int, default=40, help="epochs per writer (the study's long run: 40)")
        p.add_argument("--epoch-s", type=float, default=1.0, help="seconds per epoch (an H100: about 1)")
    writer.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--writers", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 48, 64])
    parser.add_argument("--out", type=Path, help="results folder (results.json, results.md)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders and the writers' logs")
    parser.add_argument("--auth-cache-s", type=int, default=60,
                        help="basic_auth.ini's auth_cache_ttl_seconds (docs/team.md's: 60; MLflow's default: 0)")
    args = parser.parse_args()
    if args.command_name == "writer":
        run_writer(args.index, args.epochs, args.epoch_s, args.folder)
        return
    if args.out is None:
        parser.error("--out is required")
    results = {"environment": environment(), "epochs": args.epochs, "epoch_s": args.epoch_s,
               "auth_cache_ttl_seconds": args.auth_cache_s,
               "command": "python -m benchmarks.server_load " + " ".join(sys.argv[1:]), "backends": {},
               "largest_clean": {}, "stopped": {}, "server_log": {}, "complete": False}
    tmp = tempfile.mkdtemp(prefix="server-load-")
    os.chmod(tmp, 0o755)  # the postgres user reaches its folder inside
    print(f"servers, databases and writer logs in {tmp}" + ("" if args.keep else " (removed at the end)"))
    try:
        for backend in args.backends:
            steps, made = [], 0
            results["largest_clean"][backend], results["stopped"][backend] = None, False
            with team_server(Path(tmp) / backend, backend, args.auth_cache_s) as uri:
                for n in sorted(args.writers):
                    set_up_team(uri, n, first=made)
                    made = max(made, n)
                    step = run_step(uri, n, args.epochs, args.epoch_s, Path(tmp) / backend / f"n{n}")
                    steps.append(step)
                    results["backends"][backend] = steps
                    write_results(results, args.out)  # after every step: a long run leaves what it measured
                    print(f"{backend} N={n}: p50 {step['p50_ms']:.1f} ms, p99 {step['p99_ms']:.1f} ms, "
                          f"{step['busy_responses_ridden_out']} busy, {step['failed_requests']} failed, "
                          f"{step['lost_metrics']} lost, clean={step['clean']}", flush=True)
                    if not step["clean"]:
                        results["stopped"][backend] = True
                        break
                    results["largest_clean"][backend] = n
            results["backends"][backend] = steps
            results["server_log"][backend] = server_log_counts(Path(tmp) / backend / "server.log")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["environment"]["load_average_at_end"] = os.getloadavg()
    results["complete"] = True
    write_results(results, args.out)
    print(markdown(results))


if __name__ == "__main__":
    main()
