"""The floors of ARCHITECTURE.md hold: no module imports one on a floor above its own, and no modules
import each other in a circle (imports inside functions and under TYPE_CHECKING count: they are
dependencies all the same). Read from the source, so a new module is covered the day it is added."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "models", "services", "schema", "resolvers", "tihuo")
# bottom to top; a module may import its own floor and the ones below
FLOORS = ["core", "models", "services", "schema", "resolvers", "schema.root", "tihuo"]


def floor_of(module: str) -> int:
    if module == "schema.root":
        return FLOORS.index("schema.root")
    return FLOORS.index(module.split(".", 1)[0])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The project modules `source` imports, wherever in it (a name imported from a package that is
    itself a module counts as that module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            # the longest project module the name starts with
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    names = set(modules)
    return {
        module: imports_of(path.read_text(encoding="utf-8"), names) - {module}
        for module, path in modules.items()
    }


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({FLOORS[floor_of(module)]}) imports {target} ({FLOORS[floor_of(target)]})"
        for module, targets in edges.items()
        for target in targets
        # a package's __init__ may gather its own modules
        if floor_of(target) > floor_of(module) and not target.startswith(module + ".")
    )


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in edges.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_one_on_a_higher_floor():
    assert upward_imports(graph()) == []


def test_no_modules_import_each_other_in_a_circle():
    # a package and the modules it gathers are one thing, not a circle
    edges = {
        module: {t for t in targets if not (t.startswith(module + ".") or module.startswith(t + "."))}
        for module, targets in graph().items()
    }
    assert circles(edges) == []


@pytest.mark.parametrize(
    ("module", "imported", "wrong"),
    [
        ("services/cards.py", "from schema.cards import CardType\n", "upward"),
        ("core/sql.py", "from services.runtime import Runtime\n", "upward"),
        ("services/codes.py", "from services import cards\n", "circle"),
    ],
)
def test_the_rules_catch_a_forbidden_import(module, imported, wrong):
    # the same checks on the source with one import added
    edges = graph()
    path = ROOT / module
    name = module_name(path)
    added = imports_of(imported, set(project_modules()))
    edges[name] = edges[name] | added
    if wrong == "upward":
        assert any(line.startswith(f"{name} ") for line in upward_imports(edges))
    else:
        assert circles(edges) != []


def test_every_floor_and_its_import_rule_is_in_architecture_md():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for floor in FLOORS:
        assert f"`{floor}`" in text or f"`{floor}/`" in text, floor
