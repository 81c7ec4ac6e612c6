"""The layout shows the architecture: ``stages/`` holds the commands alone, the library lives in
``study/`` by concern, no command imports another, no import circle, every file readable whole."""

import ast

import pytest
import yaml
from conftest import ROOT
from test_dvc_deps import imported_modules, module_file

MAX_LINES = 450
# commands users run besides the DVC stages (README documents them)
USER_COMMANDS = {"stages.compare", "stages.register"}


def project_modules() -> list[str]:
    names = []
    for package in ("models", "stages", "study"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_stages_holds_the_commands_alone():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = {stage.get("do", stage)["cmd"].split()[2] for stage in dvc.values()} | USER_COMMANDS
    found = {f"stages.{p.stem}" for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py"}
    assert found == commands
    assert not [p for p in (ROOT / "stages").iterdir() if p.is_dir() and p.name != "__pycache__"]
    for module in sorted(found):
        tree = ast.parse(module_file(module).read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions, f"{module} has no main()"


def test_no_command_imports_another():
    for module in project_modules():
        if module.startswith("stages.") or module == "stages":
            continue
        assert not {m for m in imported_modules(module_file(module)) if m.startswith("stages")}, \
            f"library module {module} imports a command"
    for module in (m for m in project_modules() if m.startswith("stages.")):
        others = {m for m in imported_modules(module_file(module)) if m.startswith("stages.")} - {module}
        assert not others, f"command {module} imports the commands {sorted(others)}"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (circle := visit(nxt, [*path, node])):
                return circle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module, [])):
            return circle
    return None


def test_no_import_circle():
    """Imports anywhere in a module count, inside functions too: a lazy import still ties the two."""
    modules = set(project_modules())
    graph = {m: {i for i in imported_modules(module_file(m)) if i in modules and i != m
                 and not m.startswith(f"{i}.")}  # a module's own parent package is no circle
             for m in modules}
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))


def test_the_circle_finder_sees_a_lazy_import(tmp_path):
    """A circle closed by an import inside a function (as stages/tracking.py and run_content.py
    once had) is found; a chain without one is not."""
    (tmp_path / "a.py").write_text("import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from a import g\n")
    (tmp_path / "c.py").write_text("import a\n")
    graph = {name: {m for m in imported_modules(tmp_path / f"{name}.py", packages=None)}
             for name in ("a", "b", "c")}
    assert graph["b"] == {"a", "a.g"}
    assert find_circle(graph) == ["a", "b", "a"]
    graph["b"] = set()
    assert find_circle(graph) is None


def test_no_module_over_450_lines():
    too_long = {str(p.relative_to(ROOT)): n for package in ("models", "stages", "study", "benchmarks")
                for p in (ROOT / package).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, too_long


def library_files():
    return [p for package in ("models", "stages", "study") for p in sorted((ROOT / package).rglob("*.py"))]


def test_no_function_over_60_lines():
    too_long = {f"{p.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1 for p in library_files()
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60}
    assert not too_long, too_long


def test_networks_are_named_where_they_are_registered_or_the_paper_speaks_of_them():
    """A network's name as a string lives in the registry (models/), the paper's values and the
    paper's claims; everything else reads the registry, so a new network needs no other edit."""
    from models.architectures import MODEL_NAMES

    allowed = {"models/architectures.py", "study/analysis/paper.py", "study/analysis/ledger.py"}
    spelled = {f"{p.relative_to(ROOT)}:{node.lineno}": node.value for p in library_files()
               if p.relative_to(ROOT).as_posix() not in allowed for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.Constant) and node.value in MODEL_NAMES}
    assert not spelled, spelled


def test_code_comments_say_why_not_which_issue():
    import re

    history = {f"{p.relative_to(ROOT)}:{i}": line.strip() for p in library_files()
               for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\b[Ii]ssue \d+", line)}
    assert not history, history


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__"))
def test_a_stages_usage_line_is_the_command_a_user_types(stage, monkeypatch, capsys):
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    monkeypatch.setattr("sys.argv", [f"{stage}.py", "--help"])
    with pytest.raises(SystemExit):
        module.main()
    assert capsys.readouterr().out.startswith(f"usage: python -m stages.{stage} "), stage


def test_the_docs_name_only_paths_a_user_has():
    """A user's clone has the project's own files: no page points into the developers' machines
    (a `../shared` folder beside the checkout, a scratch or home folder)."""
    pages = [ROOT / "README.md", ROOT / "params.yaml", ROOT / "benchmarks/README.md",
             *sorted((ROOT / "docs").glob("*.md"))]
    found = [f"{page.relative_to(ROOT)}:{n}: {line.strip()}" for page in pages
             for n, line in enumerate(page.read_text().splitlines(), 1)
             if any(machine in line for machine in ("../shared", "/tmp/", "/work/", "/home/", "/root/"))]
    assert found == []
