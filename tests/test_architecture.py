"""The shape of the package: import layering, no import cycles, one home for the checkpoint layout, a registry
that matches the shipped configs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rlft
from rlft.algos import registry
from rlft.paths import CONFIG_DIR

PACKAGE = Path(rlft.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """Every rlft module ``name`` imports, at module level or inside functions (TYPE_CHECKING blocks excluded)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports exist for annotations only
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
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
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_anywhere():
    assert _cycles() == []


@pytest.mark.parametrize("layer", ["rlft.policies", "rlft.envs", "rlft.datasets"])
def test_lower_layers_import_nothing_from_algos(layer):
    bad = {m: sorted(i for i in deps if i.startswith("rlft.algos")) for m, deps in GRAPH.items() if m.startswith(layer)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_policies_envs_datasets_do_not_import_the_runtime():
    lower = ("rlft.policies", "rlft.envs", "rlft.datasets")
    bad = {m: sorted(d for d in deps if d.startswith("rlft.runtime")) for m, deps in GRAPH.items() if m.startswith(lower)}
    assert {m: d for m, d in bad.items() if d} == {}


def test_nothing_imports_the_cli():
    assert sorted(m for m, deps in GRAPH.items() if "rlft.cli" in deps) == ["rlft.__main__"]  # python -m rlft: the command itself


def test_error_types_have_one_home():
    defined = {m for m, p in MODULES.items() if any(isinstance(n, ast.ClassDef) and n.name.endswith("Error") for n in ast.walk(ast.parse(p.read_text())))}
    assert defined == {"rlft.errors"}


def test_only_the_checkpoint_module_knows_the_checkpoint_layout():
    names = ('"model.safetensors"', '"trainer.pt"', '"state.json"', '"policy.safetensors"', '"policy.json"', '"step_"')
    knows = sorted(m for m, p in MODULES.items() if any(n in p.read_text() for n in names))
    assert knows == ["rlft.runtime.checkpoint"]


def test_registry_matches_the_algo_configs_and_its_entry_points_resolve():
    shipped = {p.stem for p in (CONFIG_DIR / "algo").glob("*.yaml")}
    assert shipped == {name for name, spec in registry.ALGOS.items() if spec.kind != "pretrain"}
    for spec in registry.ALGOS.values():
        assert spec.kind in registry.KINDS
        for target in (spec.train, spec.load, spec.check or registry.KIND_CHECKS[spec.kind], spec.provider, spec.config):
            if target:
                assert callable(registry.entry_point(target)), target
