"""The layering of docs/architecture.md holds: imports point down, and nothing outside a registry
branches on a model's or objective's name."""

import ast
from pathlib import Path

import pytest

from pyro_vae.models import MODELS
from pyro_vae.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_vae"
FRONT = {"pyro_vae.cli", "pyro_vae.runner", "pyro_vae.run_config", "pyro_vae.scaffold"}
LOOP = {"pyro_vae.train", "pyro_vae.engine", "pyro_vae.graphs", "pyro_vae.hooks",
        "pyro_vae.checkpoint"}
MEASURE = {"pyro_vae.evaluate", "pyro_vae.metrics", "pyro_vae.importance",
           "pyro_vae.likelihood", "pyro_vae.diagnostics"}
OBJECTIVE = {"pyro_vae.objectives", "pyro_vae.annealing"}
# module (or package prefix) -> what it must not import
FORBIDDEN = {
    "pyro_vae.runs": FRONT | LOOP | MEASURE | OBJECTIVE | {"pyro_vae.models"},
    "pyro_vae.distributed": FRONT | LOOP | MEASURE | OBJECTIVE | {"pyro_vae.models"},
    "pyro_vae.distributions": FRONT | LOOP | MEASURE | OBJECTIVE | {"pyro_vae.models"},
    "pyro_vae.models": FRONT | LOOP | MEASURE | OBJECTIVE | {"pyro_vae.plots"},
    **{f"pyro_vae.estimators.{m}": FRONT | LOOP | MEASURE | {"pyro_vae.models"}
       for m in ("base", "baselines", "dreg", "iwae", "rws", "traces", "vimco")},
    "pyro_vae.objectives": FRONT | LOOP | MEASURE | {"pyro_vae.models"},
    "pyro_vae.annealing": FRONT | LOOP | MEASURE | {"pyro_vae.models"},
    "pyro_vae.train": FRONT | {"pyro_vae.metrics", "pyro_vae.diagnostics"},
    "pyro_vae.engine": FRONT | MEASURE | {"pyro_vae.graphs"},
    "pyro_vae.graphs": FRONT | MEASURE | {"pyro_vae.train"},
    "pyro_vae.hooks": FRONT,
    "pyro_vae.checkpoint": FRONT | MEASURE,
    "pyro_vae.evaluate": FRONT | LOOP,
    "pyro_vae.importance": FRONT | LOOP,
    "pyro_vae.information": FRONT | LOOP,
    "pyro_vae.metrics": FRONT | LOOP - {"pyro_vae.hooks"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("pyro_vae")}


def _rule(module: str) -> set[str]:
    for prefix, forbidden in FORBIDDEN.items():
        if module == prefix or module.startswith(prefix + "."):
            return forbidden
    return set()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_imports_point_down(path):
    module = _module_name(path)
    bad = sorted(i for i in _imports(path) for f in _rule(module)
                 if i == f or i.startswith(f + "."))
    assert not bad, f"{module} imports {bad} (docs/architecture.md: imports point down)"


def test_only_the_cli_imports_the_cli():
    for path in PACKAGE.rglob("*.py"):  # console.py is the command's entry point
        if path.name not in ("cli.py", "console.py"):
            assert "pyro_vae.cli" not in _imports(path), path


NAMES = set(OBJECTIVES) | set(MODELS)


def _strings(node) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_strings(e) for e in node.elts)) if node.elts else set()
    return set()


def _name_branches(path: Path) -> list[str]:
    """Comparisons of something called objective/model/name with a registered name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        registered = set().union(*(_strings(s) for s in sides)) & NAMES
        text = " ".join(ast.unparse(s) for s in sides if not _strings(s))
        if registered and any(w in text for w in ("objective", "model", "name")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_outside_a_registry_branches_on_a_name():
    registries = {PACKAGE / "objectives.py", PACKAGE / "models" / "__init__.py"}
    files = [p for p in [*PACKAGE.rglob("*.py"), *(ROOT / "examples").glob("*.py")]
             if p not in registries]
    found = [hit for p in files for hit in _name_branches(p)]
    assert not found, "\n".join(found)
