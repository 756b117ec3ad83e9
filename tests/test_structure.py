"""The shape of the package, checked so that it stays this way (docs/architecture in
docs/run-folder.md and the module docstrings):

- no import cycle between nexa_ops modules, counting imports inside functions too;
- only ``tools/slurm.py`` names a Slurm program, only ``tools/git.py`` git; only ``tools/``
  runs external tools;
- only ``runs.py`` writes a run's ``manifest.json``;
- the compute-node worker imports nothing but the standard library;
- classes are declared with ``structs.frozen``/``structs.mutable``, not ``@dataclass``
  (each of its generated methods is compiled at start-up).
"""

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "nexa_ops"
SLURM_PROGRAMS = {"sbatch", "squeue", "scontrol", "sacct", "sacctmgr", "scancel", "sinfo", "srun", "sdiag"}
#: Modules that start a process through proc without being a tool wrapper, and why.
OWN_PROCESSES = {
    "nexa_ops.sweep.local": "runs nexa's own worker for each local task",
    "nexa_ops.launcher.run": "runs the user's training command",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Dict[str, Tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        out[module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return out


MODULES = modules()


def imported(name: str, path: Path, tree: ast.Module) -> Iterator[str]:
    """Every nexa_ops module ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nexa_ops"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("nexa_ops"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def graph() -> Dict[str, Set[str]]:
    return {name: {m for m in imported(name, path, tree) if m in MODULES and m != name} for name, (path, tree) in MODULES.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(1000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_imports_flow_down_from_commands():
    """Nothing below the command layer imports a command module or the CLI."""
    for name, targets in graph().items():
        if name.startswith(("nexa_ops.commands", "nexa_ops.cli", "nexa_ops.__main__")):
            continue
        upward = sorted(t for t in targets if t.startswith(("nexa_ops.commands", "nexa_ops.cli")))
        assert not upward, f"{name} imports {upward}"


def test_tools_import_no_feature():
    """tools/ wrap programs over proc and the pure core: never a feature above them."""
    core = {"nexa_ops", "nexa_ops.proc", "nexa_ops.errors", "nexa_ops.config", "nexa_ops.schema", "nexa_ops.toml", "nexa_ops.fs",
            "nexa_ops.structs"}
    for name, targets in graph().items():
        if name.startswith("nexa_ops.tools."):
            above = sorted(t for t in targets if not t.startswith("nexa_ops.tools") and t not in core)
            assert not above, f"{name} imports {above}"


def string_argv_heads(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """The program names that start an argv list or tuple literal."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            head = node.elts[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str):
                yield node.lineno, head.value


def test_only_the_slurm_module_names_slurm_programs():
    for name, (_path, tree) in MODULES.items():
        if name == "nexa_ops.tools.slurm":
            continue
        named = [(line, word) for line, word in string_argv_heads(tree) if word in SLURM_PROGRAMS]
        assert not named, f"{name} runs Slurm's {named}: only nexa_ops/tools/slurm.py may"


def test_only_the_git_module_names_git():
    for name, (_path, tree) in MODULES.items():
        if name == "nexa_ops.tools.git":
            continue
        named = [line for line, word in string_argv_heads(tree) if word == "git"]
        assert not named, f"{name} runs git at lines {named}: only nexa_ops/tools/git.py may"


def proc_calls(tree: ast.Module) -> Iterator[int]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("run", "spawn"):
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "proc":
                yield node.lineno


def test_only_tools_run_external_programs():
    for name, (_path, tree) in MODULES.items():
        if name.startswith("nexa_ops.tools.") or name in OWN_PROCESSES or name == "nexa_ops.proc":
            continue
        lines = list(proc_calls(tree))
        assert not lines, f"{name} calls proc.run/spawn at lines {lines}: go through a wrapper in nexa_ops/tools/"


def test_no_shell_true_anywhere():
    for name, (_path, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), name


def test_only_the_run_module_writes_run_manifests():
    for name, (path, _tree) in MODULES.items():
        if name == "nexa_ops.runs":
            continue
        text = path.read_text(encoding="utf-8")
        assert "MANIFEST)" not in text.replace("runs.MANIFEST)", ""), name
        assert '"manifest.json"' not in text, f"{name} names manifest.json: use runs.MANIFEST through runs' writer"


def test_records_are_declared_through_structs():
    for name, (_path, tree) in MODULES.items():
        if name == "nexa_ops.structs":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    called = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                    assert called != "dataclass", f"{name}.{node.name}: @dataclass; use structs.frozen or structs.mutable"


@pytest.mark.parametrize("module", ["nexa_ops.worker"])
def test_the_worker_imports_only_the_standard_library(module):
    _path, tree = MODULES[module]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module} imports from nexa_ops"
            names.add((node.module or "").split(".")[0])
    assert all(n in sys.stdlib_module_names or n in ("marshal", "_signal") for n in names if n), names
