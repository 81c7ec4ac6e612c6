"""The seconds of a pipeline run that are not training epochs (issue 23).

Runs the quick run (docs/speed.md), `dvc exp run -S data.source=<mirror> -S epochs=1
-S data.train_subset=2000 -S data.test_subset=1000`, in a fresh temporary clone of this
repository's HEAD (committed code only, an empty MLflow store, no DVC cache), and prints the
wall time against the sum of the training epochs, each stage's wall time as DVC ran it,
each training's own breakdown (the `timings_s` of its record) and each evaluation's closing
line (start-up; imports, evaluation and figures; the wait for its MLflow log). Needs DVC and MLflow (the
pipeline's own tools), unlike benchmarks/bench.py.

  python -m benchmarks.overhead --data ../shared/data/cifar10-jpeg.tar.gz --out benchmarks/results/<machine>
  python -m benchmarks.overhead --data <mirror> --train-subset 200 --test-subset 100 -S 'models=[vgg8]'  # tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_timed(args: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """(wall seconds, [(seconds since start, line)]): every output line stamped as it arrives."""
    start = time.perf_counter()
    lines = []
    # the local store of the clone, as on a fresh checkout: never a team server named in this shell
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME")}
    with subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            print(line, end="", flush=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} exited {proc.returncode} after {wall:.0f} s (its output is above)")
    return wall, lines


def stage_walls(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Each stage's wall time, from DVC's "Running stage 'x'" line to the next stage's (the
    last stage ends with the command)."""
    starts = [(t, line.split("'")[1]) for t, line in lines if line.startswith("Running stage '")]
    ends = [t for t, _ in starts[1:]] + [wall]
    return {name: round(end - t, 2) for (t, name), end in zip(starts, ends, strict=True)}


STAGE_LINE = re.compile(r"^(\w+): stage ([\d.]+) s = .*\(epochs alone ([\d.]+)")
EVALUATE_LINE = re.compile(r"^(\w+): stage [\d.]+ s = .*imports, evaluation and figures [\d.]+")


def evaluate_lines(lines: list[tuple[float, str]]) -> dict[str, str]:
    """Each evaluate stage's own closing line: start-up, its work, and the wait for its MLflow log."""
    return {m.group(1): line for _, line in lines if (m := EVALUATE_LINE.match(line))}


def stage_lines(lines: list[tuple[float, str]]) -> dict[str, dict]:
    """Each training's own closing line: its whole time, process start-up included, and its epochs."""
    found = {}
    for _, line in lines:
        if m := STAGE_LINE.match(line):
            found[m.group(1)] = {"stage_s": float(m.group(2)), "epochs_s": float(m.group(3)),
                                 "line": line}
    return found


def overhead(*, data: str, epochs: int, train_subset: int, test_subset: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        command = [sys.executable, "-m", "dvc", "exp", "run", "-S", f"data.source={Path(data).resolve()}",
                   "-S", f"epochs={epochs}", "-S", f"data.train_subset={train_subset}",
                   "-S", f"data.test_subset={test_subset}", *[a for s in extra for a in ("-S", s)]]
        wall, lines = run_timed(command, clone)
        trainings, printed = {}, stage_lines(lines)
        for record_path in sorted((clone / "outputs").glob("*/record.json")):
            record = json.loads(record_path.read_text())
            timings = record["timings_s"]
            trainings[record_path.parent.name] = {
                "epochs_s": round(timings["epochs_s"], 2),
                "outside_epochs_s": round(printed[record_path.parent.name]["stage_s"] - timings["epochs_s"], 2),
                "stage_line": printed[record_path.parent.name]["line"],
                "timings_s": {k: round(v, 2) for k, v in timings.items()},
                "device_name": record["provenance"].get("device_name", "")}
    epochs_s = sum(t["epochs_s"] for t in trainings.values())
    return {"command": " ".join(["dvc", *command[3:]]), "git_commit": commit, "cpu": cpu_model(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": round(wall, 2),
            "epochs_s": round(epochs_s, 2), "ratio": round(wall / epochs_s, 2) if epochs_s else None,
            "stages_s": stage_walls(lines, wall), "trainings": trainings, "evaluations": evaluate_lines(lines)}


def summary_lines(result: dict) -> list[str]:
    lines = [f"{result['command']}  (commit {result['git_commit'][:10]}, {result['cpu']}, one run)",
             f"wall {result['wall_s']:.1f} s for {result['epochs_s']:.1f} s of training epochs: "
             f"{result['ratio']}x"]
    lines += [f"  {name:<20} {seconds:7.1f} s" for name, seconds in result["stages_s"].items()]
    for model, t in result["trainings"].items():
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.1f}" for k, v in t["timings_s"].items() if k != "epochs_s")
        lines.append(f"  train@{model}: epochs {t['epochs_s']:.1f} s; in-process phases: {parts} "
                     f"(outside the epochs, start-up included: {t['outside_epochs_s']:.1f} s)")
    lines += [f"  evaluate@{line}" for line in result.get("evaluations", {}).values()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the image-folder mirror or the official archive")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("-S", dest="extra", action="append", default=[], help="more `dvc exp run -S` settings")
    parser.add_argument("--out", type=Path, help="folder for overhead.json and overhead.txt")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"error: --data {args.data} not found; point it at the CIFAR-10 mirror or archive")
    result = overhead(data=args.data, epochs=args.epochs, train_subset=args.train_subset,
                      test_subset=args.test_subset, extra=args.extra)
    text = "\n".join(summary_lines(result))
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "overhead.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
