"""`python -m stages.register`: alias the study's reference models in MLflow's Model Registry.

For each network in params.yaml's `models`: the run of the study's recipe at full size
(params.yaml's epochs and seed, no subset, the committed recipe) that the report shows, the
workspace's training where it is one, whose logged model evaluate checked, becomes a
version of `<experiment>-<model>` (never twice) and takes the alias `reference`. This command is
the only writer of the registry: the report never registers, and a subset run is refused, so
`@reference` moves only when someone asks it to.
"""

from __future__ import annotations

import argparse

from study.config import Settings, load_settings
from study.console import run_main
from study.errors import StageError


def full_size_refusal(settings: Settings) -> str | None:
    subsets = {key: value for key, value in (("data.train_subset", settings.data.train_subset),
                                             ("data.test_subset", settings.data.test_subset)) if value}
    if not subsets:
        return None
    said = ", ".join(f"{key} {value}" for key, value in subsets.items())
    return (f"@reference is the study's recipe at full size, and params.yaml asks for a subset ({said}); reset it "
            "(`git checkout params.yaml`), train with `dvc repro` and register again, or load a run's own model "
            f"(`runs:/<run id>/<model>-e{settings.epochs}`) without the registry")


def uncommitted_recipe(settings: Settings, params: str = "params.yaml") -> str | None:
    """The recipe keys in which ``params`` differs from its committed version (`dvc exp run -S`
    leaves its values there): @reference is the committed recipe's run. None outside git."""
    import subprocess

    import yaml

    from study.config import flatten, parse_settings

    shown = subprocess.run(["git", "show", f"HEAD:./{params}"], capture_output=True, text=True)
    if shown.returncode:
        return None  # no git, or params.yaml not committed: nothing to hold it to
    try:
        committed = flatten(parse_settings(yaml.safe_load(shown.stdout)).recipe(""))
    except StageError:
        return None  # a committed file this code no longer reads: the working one is checked as it is
    now = flatten(settings.recipe(""))
    differ = [f"{key} {now.get(key)!r} (committed {committed.get(key)!r})"
              for key in sorted(now.keys() | committed.keys()) if now.get(key) != committed.get(key) and key != "model"]
    if not differ:
        return None
    return (f"@reference is the committed recipe's run, and params.yaml differs from it in {', '.join(differ[:4])}; "
            "reset it (`git checkout params.yaml`) or commit the recipe you mean, then register again")


def workspace_trainings(models) -> set[str]:
    """The record ids of the trainings in outputs/: the runs DVC shows, which the report prefers."""
    import json

    from study.paths import output_paths

    paths = [output_paths(model)["record"] for model in models]
    return {json.loads(path.read_text())["record_id"] for path in paths if path.exists()}


def reference_runs(settings: Settings, data_sha256: str | None) -> dict[str, object]:
    """Per network, the run of the recipe at params.yaml's epochs and seed that the report shows:
    the workspace's own training where it is one, else the latest finished."""
    from study.analysis.selection import select
    from study.tracking.store import finished_runs

    selection = select(finished_runs(settings.mlflow.experiment), settings, data_sha256,
                       workspace_trainings(settings.models))
    chosen = {}
    for model in settings.models:
        cell = selection.study.get((model, settings.epochs))
        run = next((r for r in (cell.runs if cell else []) if int(r["params.seed"]) == settings.seed), None)
        if run is not None:
            chosen[model] = run
    return chosen


def register(settings: Settings, data_sha256: str | None) -> list[str]:
    from study.tracking.registry import checked_model, register_reference, registered_name
    from study.tracking.store import connect, current_user, require_store, store_error, tracking_uri

    if (refused := full_size_refusal(settings) or uncommitted_recipe(settings)) is not None:
        raise StageError(refused)
    require_store(tracking_uri())
    client, _ = connect(settings.mlflow.experiment, create=False)
    runs = reference_runs(settings, data_sha256)
    user = current_user()
    lines, missing = [], []
    for model in settings.models:
        run = runs.get(model)
        try:
            found = run is not None and checked_model(client, str(run["experiment_id"]), run["run_id"])
            if not found:
                missing.append(model)
                continue
            name = registered_name(settings.mlflow.experiment, model)
            lines.append(register_reference(client, name, found, run["run_id"], settings.epochs, settings.seed, user))
        except StageError:
            raise
        except Exception as err:
            raise store_error(tracking_uri(), err) from err
    if missing:
        line = (f"no finished run of the recipe ({settings.epochs} epochs, seed {settings.seed}, full size) with a "
                f"checked model for {', '.join(missing)}: `dvc repro` trains and evaluates it "
                "(mlflow.log_model: true)")
        if not lines:
            raise StageError(line)
        lines.append(f"warning: {line}")
    return lines


def loaded_line(model: str, params: str) -> str:
    from study.tracking.registry import load_reference

    loaded = load_reference(model, params)
    signature = loaded.metadata.signature
    spec = signature.inputs.to_dict()[0].get("tensor-spec", {}) if signature and signature.inputs else {}
    if not spec:
        return f"{model}@reference (run {loaded.metadata.run_id}) loads; it carries no tensor signature"
    shape = "x".join("N" if n == -1 else str(n) for n in spec["shape"])
    return f"{model}@reference (run {loaded.metadata.run_id}) loads: {spec['dtype']} images {shape} in, logits out"


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    parser.add_argument("--load", metavar="MODEL", help="register nothing: load MODEL's reference as MLflow serves "
                        "it (study.tracking.registry.load_reference) and say what it is, or in one line why not")
    args = parser.parse_args()

    def work():
        from study.data import prepared_meta

        if args.load:
            print(loaded_line(args.load, args.params))
            return
        for line in register(load_settings(args.params), prepared_meta().get("sha256")):
            print(line)

    run_main(work)


if __name__ == "__main__":
    main()
