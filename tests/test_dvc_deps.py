"""dvc.yaml must list, for every stage, each project module its command imports
(transitively): a missing one means DVC says "up to date" while the code has changed."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("models", "stages", "study")


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path, packages: tuple[str, ...] | None = PACKAGES) -> set[str]:
    """Project modules that ``path`` imports anywhere (top level or inside functions); with
    ``packages=None``, every name it imports, as written."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from stages import paper
    # importing a.b runs a/__init__.py first: the parent packages count too
    found |= {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 1)}
    if packages is None:
        return found
    return {name for name in found if (f := module_file(name)) is not None and f.exists()}


def closure(module: str) -> set[str]:
    files, todo = set(), [module]
    while todo:
        path = module_file(todo.pop())
        rel = path.relative_to(ROOT).as_posix()
        if rel in files:
            continue
        files.add(rel)
        todo += sorted(imported_modules(path))
    return {f for f in files if not is_marker(ROOT / f)}


def is_marker(path: Path) -> bool:
    """A package's ``__init__.py`` that holds a docstring at most: no code a stage could depend on."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                              for n in body)


def stages():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        body = stage.get("do", stage)
        module = re.search(r"python -m ([\w.]+)", body["cmd"]).group(1)
        yield name, module, {d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])}


@pytest.mark.parametrize(("stage", "module", "deps"), list(stages()), ids=[s[0] for s in stages()])
def test_every_imported_project_module_is_a_dependency(stage, module, deps):
    needed = closure(module)
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} imports {missing} but does not list them under deps"


def test_the_closure_is_followed():
    assert {"study/analysis/paper.py", "study/analysis/selection.py", "study/config.py",
            "study/analysis/receptive_field.py", "study/tracking/store.py", "models/architectures.py",
            "models/network.py"} <= closure("stages.report")


def test_the_resume_fallback_names_the_training_loop_code():
    """Outside a repository the resume fingerprint hashes study.training.resume.CODE_FALLBACK: the files of
    the training loop itself (the engine and what it imports from the project), all train deps."""
    from study.training.resume import CODE_FALLBACK

    train_deps = next(deps for name, _, deps in stages() if name == "train")
    loop = closure("study.training.engine") | {"stages/train.py", "study/training/resume.py"}
    assert set(CODE_FALLBACK) <= train_deps
    # files, messages, paths and provenance shape no number the loop computes
    plumbing = {f"study/{name}.py" for name in ("console", "environment", "errors", "files", "paths", "processes",
                                                "provenance")}
    assert loop - plumbing <= set(CODE_FALLBACK), sorted(loop - set(CODE_FALLBACK))
