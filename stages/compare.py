"""Compare experiments offline: the learning curves of every model, one line per
experiment, as a static image (DVC's own `dvc plots diff` HTML loads Vega from the
internet). The data comes from `dvc plots diff --json`, so any revision DVC understands
works: experiment names, commits, branches, `workspace`.

    python -m stages.compare e5-s0 e40-s0            # -> reports/compare.png
    python -m stages.compare HEAD workspace --metric train_loss
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from study.console import plural, run_main
from study.errors import StageError

OUT = Path("reports/compare.png")


def plots_data(revisions: list[str]) -> list[dict]:
    """The learning-curve rows of ``dvc plots diff --json`` for ``revisions``."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "plots", "diff", "--json", *revisions], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise StageError(f"dvc plots diff {' '.join(revisions)} failed: {lines[-1] if lines else proc.returncode}; "
                         "name revisions that `dvc exp show` lists")
    plots = json.loads(proc.stdout).get("data", {})  # one plot per outputs/<model>/history.csv (dvc.yaml)
    rows = [{**row, "filename": f"{Path(path).parent.name}/history.csv"} for path, plot in plots.items()
            if path.endswith("/history.csv") for part in plot for row in part["content"]["data"]["values"]]
    if not rows:
        raise StageError(f"no learning curves in {', '.join(revisions)}; train first (`dvc exp run`)")
    return rows


def missing_revisions(rows: list[dict], revisions: list[str]) -> list[str]:
    """The revisions asked for that gave no learning curve (DVC leaves them out without a word)."""
    found = {row["rev"] for row in rows}
    return [rev for rev in revisions if rev not in found]


def why_missing(rev: str) -> str:
    """Why a revision gave no learning curves, and what to do: a commit without a dvc.lock ran
    nothing (main, whose reference run sits in its results store); else its outputs are not here."""
    def git(*args: str) -> bool:
        return subprocess.run(["git", *args], capture_output=True).returncode == 0

    if rev != "workspace" and git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}") \
            and not git("cat-file", "-e", f"{rev}:dvc.lock"):
        return (f"revision {rev} holds no run (no dvc.lock there: code only); name an experiment that "
                "`dvc exp show` lists with metrics (the reference run's curves are in its store's report)")
    return (f"revision {rev} has no learning curves here (its outputs/<model>/history.csv are in neither the "
            "workspace nor this clone's DVC cache); get them with `dvc pull` for a commit or "
            f"`dvc exp pull origin {rev}` for an experiment, then rerun")


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("revisions", nargs="+", help="experiments or git revisions, as `dvc plots diff` takes them")
    parser.add_argument("--metric", default="test_acc", help="a history.csv column (default test_acc)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the image to write (default: {OUT})")
    args = parser.parse_args()

    def work():
        rows = plots_data(args.revisions)
        if args.metric not in rows[0]:
            raise StageError(f"--metric {args.metric!r} is not a history column; one of "
                             f"{', '.join(k for k in rows[0] if k not in ('rev', 'filename'))}")
        for rev in missing_revisions(rows, args.revisions):
            print(f"warning: {why_missing(rev)}", file=sys.stderr)
        from study.figures import plot_comparison

        plot_comparison(rows, args.metric, args.out)
        print(f"wrote {args.out}: {args.metric} of {plural(len({r['filename'] for r in rows}), 'model')} in "
              f"{', '.join(dict.fromkeys(r['rev'] for r in rows))}")

    run_main(work)


if __name__ == "__main__":
    main()
