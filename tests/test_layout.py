"""The direction of imports (docs/development.md, "Map of the package"), read from the source with ast: every
import counts, at module level or inside a function.

Inference (predicting, the assists, drawing, file formats, the editing session, the app) never imports the
training engine; the library never imports the app or Gradio; the library's modules import one another
without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The modules used for inference, each named: a new one is added here on purpose, not picked up unnoticed.
INFERENCE_MODULES = {
    "app",
    "app.__main__",
    "app.assist_layout",
    "app.assists",
    "app.handlers",
    "app.layers",
    "app.layout",
    "app.main",
    "app.model",
    "app.render",
    "app.review",
    "app.security",
    "app.tab",
    "semlayer.assist",
    "semlayer.evaluate",
    "semlayer.formats",
    "semlayer.formats._base",
    "semlayer.formats.api",
    "semlayer.formats.coco",
    "semlayer.formats.cocoa",
    "semlayer.formats.compact",
    "semlayer.formats.indexed",
    "semlayer.formats.masks",
    "semlayer.formats.records",
    "semlayer.formats.results",
    "semlayer.formats.stream",
    "semlayer.formats.validate",
    "semlayer.model",
    "semlayer.model.backbones",
    "semlayer.model.build",
    "semlayer.model.checkpoint",
    "semlayer.model.sln",
    "semlayer.predict",
    "semlayer.viz",
    "semlayer.workspace",
}
INFERENCE_PACKAGES = ("app", "semlayer.formats", "semlayer.model")
INFERENCE_SINGLE = ("semlayer.assist", "semlayer.evaluate", "semlayer.predict", "semlayer.viz", "semlayer.workspace")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    """Every module of a top-level package, by dotted name."""
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imported(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The dotted names ``source`` (module ``name``) imports anywhere in it; ``from a import b`` gives ``a.b``
    when that is a known module, else ``a``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in known else target)
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports. Importing ``a.b.c`` from outside package ``a.b`` also
    runs ``a/b/__init__.py`` first, so that is an edge too."""
    found = modules(package)
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        targets = imported(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", known)
        edges: set[str] = set()
        for target in targets:
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                prefix = ".".join(parts[:n])
                if prefix in known and prefix != name and not (name + ".").startswith(prefix + "."):
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def all_imports() -> dict[str, set[str]]:
    """Every module of semlayer/ and app/ with every name it imports."""
    out = {}
    for package in ("semlayer", "app"):
        found = modules(package)
        for name, path in found.items():
            out[name] = imported(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", set(found))
    return out


def is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_reader_sees_function_level_and_relative_imports():
    source = "from .. import distributed as D\n\ndef f():\n    from .engine import trainer\n    import gradio\n"
    known = {"semlayer.distributed", "semlayer.model.engine.trainer"}
    assert imported("semlayer.model.x", source, False, known) == {
        "semlayer.distributed",
        "semlayer.model.engine.trainer",
        "gradio",
    }


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_inference_module_imports_the_training_engine():
    imports = all_imports()
    inference = {
        name for name in imports if any(is_under(name, p) for p in INFERENCE_PACKAGES) or name in INFERENCE_SINGLE
    }
    assert inference == INFERENCE_MODULES
    offenders = {name: sorted(t for t in imports[name] if is_under(t, "semlayer.engine")) for name in inference}
    assert {name: found for name, found in offenders.items() if found} == {}
    # Within the library only the engine itself imports the engine (train.py, bench/ and tests/ may).
    library_importers = {
        name for name, targets in imports.items() if any(is_under(t, "semlayer.engine") for t in targets)
    }
    assert library_importers == {"semlayer.engine", "semlayer.engine.trainer"}


def test_the_library_imports_neither_the_app_nor_gradio():
    imports = all_imports()
    library = {name for name in imports if is_under(name, "semlayer")}
    assert {"semlayer", "semlayer.cli", "semlayer.engine.trainer", "semlayer.predict"} <= library
    offenders = {
        name: sorted(t for t in imports[name] if is_under(t, "app") or is_under(t, "gradio")) for name in library
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    # The check reads real imports: the app does import gradio.
    assert any(is_under(t, "gradio") for t in imports["app.layout"])


def test_the_library_has_no_import_circle():
    graph = import_graph("semlayer")
    assert find_cycle(graph) is None
    # The graph is the real one: the edges that the split into config / model.checkpoint / engine made.
    assert {"semlayer.config", "semlayer.model.checkpoint", "semlayer.distributed"} <= graph["semlayer.predict"]
    assert "semlayer.config" in graph["semlayer.model.build"]
    assert {"semlayer.model", "semlayer.model.checkpoint", "semlayer.distributed"} <= graph["semlayer.engine.trainer"]
    assert sum(len(edges) for edges in graph.values()) > 100
