"""dvc.yaml must list, for every stage, each project module its command imports
(transitively): a missing one means DVC says "up to date" while the code has changed."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

PACKAGES = ("models", "stages")


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """Project modules that ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from stages import paper
    # importing a.b runs a/__init__.py first: the parent packages count too
    found |= {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 1)}
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
    return files - {"stages/__init__.py"}  # empty package marker


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
    assert {"stages/paper.py", "stages/selection.py", "stages/config.py", "stages/receptive_field.py",
            "models/__init__.py", "models/architectures.py", "models/network.py"} <= closure("stages.report")


def test_the_resume_fallback_names_the_training_loop_code():
    """Outside a repository the resume fingerprint hashes stages.resume.CODE_FALLBACK: the files of
    the training loop itself (the engine and what it imports from the project), all train deps."""
    from stages.resume import CODE_FALLBACK

    train_deps = next(deps for name, _, deps in stages() if name == "train")
    loop = closure("stages.engine") | {"stages/train.py", "stages/resume.py"}
    assert set(CODE_FALLBACK) <= train_deps
    # stages/common.py (files, messages, provenance) shapes no number the loop computes
    assert loop - {"stages/common.py"} <= set(CODE_FALLBACK), sorted(loop - set(CODE_FALLBACK))
