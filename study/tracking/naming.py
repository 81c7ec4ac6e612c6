"""What a training run is called and tagged: its name, its label in figure titles, its
params, tags and description, all derived from the training's record."""

from __future__ import annotations

import os
import socket
from typing import Any

from study.config import flatten
from study.console import plural
from study.data import MIRROR_QUALITY
from study.environment import environment_tags
from study.paths import project_root
from study.processes import process_start_ticks
from study.recipe import RECIPE

# the settings an ablation changes: a run whose value differs from the paper's is named for it
NAMED_SETTINGS = ("init", "lr", "optimizer")


def distinctions(recipe: dict[str, Any]) -> list[str]:
    """What sets a run apart from the study's recipe: each ablation setting that differs
    (``init_kaiming``) and the JPEG quality of a re-encoded data variant (``jpeg_q25``)."""
    changed = [f"{key}_{value}" for key, value in recipe.get("train", {}).items()
               if key in NAMED_SETTINGS and value != RECIPE[key]]
    quality = recipe.get("data", {}).get("jpeg_quality")  # the data's identity, from its images (prepare)
    if quality is not None and quality != MIRROR_QUALITY:
        changed.append(f"jpeg_q{quality}")
    return changed


def run_name(recipe: dict[str, Any]) -> str:
    """``<model>-e<epochs>-s<seed>``, then its ``distinctions`` (``vgg16-e40-s0-init_kaiming``,
    ``alexnet-e40-s0-jpeg_q25``), so that no variant shares a name with the recipe's run."""
    return "-".join([f"{recipe['model']}-e{recipe['epochs']}-s{recipe['seed']}", *distinctions(recipe)])


# the logged model's tag naming the checkpoint it came from, set once its load-back check passed:
# an evaluation run again finds it (study.tracking.model_log), and the registry registers it
CHECKPOINT_TAG = "checkpoint_sha256"
SEQUENCE_TAG = "sequence"  # the order runs were opened in an experiment (study.tracking.runs.next_sequence)
# set as it is logged, removed once checked: a model with this tag was never checked (its process
# stopped in between), and the next evaluation of the checkpoint replaces it
UNCHECKED_TAG = "checkpoint_sha256_unchecked"


def model_name(recipe: dict[str, Any]) -> str:
    """A logged model's name: what it is, network and recipe (``vgg16_bn-e40``,
    ``vgg16-e40-init_kaiming``); the seed is its run's."""
    return "-".join([f"{recipe['model']}-e{recipe['epochs']}", *distinctions(recipe)])


def run_label(recipe: dict[str, Any]) -> str:
    """The run in words for a figure's title: ``alexnet, 40 epochs, seed 0, jpeg_q25``."""
    return ", ".join([f"{recipe['model']}, {plural(recipe['epochs'], 'epoch')}, seed {recipe['seed']}",
                      *distinctions(recipe)])


def run_params(record: dict[str, Any]) -> dict[str, Any]:
    """The MLflow params of a training: its recipe, its data and the runtime that really ran."""
    return {**flatten(record["recipe"]), "data.sha256": record["provenance"]["data_sha256"],
            **flatten({"runtime": record["runtime"]}), "num_parameters": record["num_parameters"]}


def git_commits(record: dict[str, Any]) -> list[str]:
    """Every commit the training ran under, in order: the start's, then each resume's."""
    commits = [record["provenance"]["git_commit"], *(r["git_commit"] for r in record.get("resumed", []))]
    return list(dict.fromkeys(commits))


def run_tags(record: dict[str, Any]) -> dict[str, str]:
    prov = record["provenance"]
    return {
        "record_id": record["record_id"], "git_commit": prov["git_commit"],
        "git_commits": ",".join(git_commits(record)),
        "mlflow.source.git.commit": prov["git_commit"], "mlflow.source.type": "LOCAL",
        "mlflow.source.name": project_root().name,  # the repository by name, never this machine's path
        "mlflow.runName": run_name(record["recipe"]),
        **({"dvc_exp_name": record["dvc_exp_name"]} if record.get("dvc_exp_name") else {}),  # only inside one
        "dvc_stage": f"train@{record['recipe']['model']}",
        "device": record["runtime"]["device"], "device_name": prov["device_name"],
        "precision": record["runtime"]["precision"], "torch_version": prov["torch_version"],
        "data_sha256": prov["data_sha256"], "mlflow.note.content": description(record), **process_tags(),
        **environment_tags(prov.get("environment", {})),
        **resumed_environments(record),
    }



def resumed_environments(record: dict[str, Any]) -> dict[str, str]:
    """A training resumed under another installed set says so: every set it ran in, in order."""
    digests = [record["provenance"].get("environment", {}).get("packages_sha256"),
               *(r.get("packages_sha256") for r in record.get("resumed", []))]
    digests = list(dict.fromkeys(d for d in digests if d))
    return {"env.packages_sha256s": ",".join(digests)} if len(digests) > 1 else {}


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Which process owns a RUNNING run (this one unless ``pid``): lets a later start tell a
    live run from an orphan."""
    pid = pid or os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_started": process_start_ticks(pid)}



OPTIMIZER_NAMES = {"sgd": "SGD", "adamw": "AdamW"}


def description(record: dict[str, Any]) -> str:
    recipe, prov, summary = record["recipe"], record["provenance"], record.get("summary")
    train = recipe["train"]
    result = (f"**Result:** {summary['final_test_acc']:.2f}% test accuracy after {plural(recipe['epochs'], 'epoch')}, "
              f"{summary['mean_epoch_time_s']:.2f} s/epoch over all epochs, the first included"
              + (f"; {after:.2f} s/epoch after the first (the report's Table 6)"
                 if (after := summary.get("mean_epoch_time_s_after_first")) else "") + "."
              if summary else "**Result:** training…")
    return "\n".join([
        f"**{recipe['model']}**, {recipe['epochs']} epochs, seed {recipe['seed']}: "
        f"{OPTIMIZER_NAMES.get(train.get('optimizer', 'sgd'), train.get('optimizer'))} lr {train['lr']} (cosine), "
        f"momentum {train['momentum']}, weight decay {train['weight_decay']}, batch {train['batch_size']}, "
        f"init {train['init']}.",
        f"**Data:** `{recipe['data']['source']}` (sha256 {prov['data_sha256'][:12]}…), train subset "
        f"{recipe['data']['train_subset'] or 'all'}, test subset {recipe['data']['test_subset'] or 'all'}.",
        f"**Ran on** {prov['device_name']} ({record['runtime']['precision']}), torch {prov['torch_version']}, "
        f"git {', then '.join(c[:10] for c in git_commits(record))}"
        f"{' (resumed under a later commit; same training code)' if len(git_commits(record)) > 1 else ''}"
        + (f", DVC experiment `{record['dvc_exp_name']}`." if record.get("dvc_exp_name") else "."),
        result])

