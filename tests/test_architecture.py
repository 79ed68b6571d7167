"""The shape of the package, read from its source with ``ast`` (fast: nothing is imported).

* tfedge's modules import each other in one direction: the graph of their imports, top-level and
  function-level alike, has no cycle.
* Keras is chosen in one place: only ``tfedge/_keras.py`` imports ``tf_keras`` / ``keras``, and only
  the Keras 3 bridge ``tfedge/keras3.py`` imports Keras 3.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfedge"


def _module_name(path: Path) -> str:
    return "tfedge" if path.name == "__init__.py" else f"tfedge.{path.stem}"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names, relative imports resolved), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x / from .x import y, relative to the tfedge package
                base = "tfedge" + (f".{base}" if base else "")
            found.append((base, node.lineno))
            # `from tfedge import files` imports the module tfedge.files
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.glob("*.py"))}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(path):
            if target in modules and target != name and target != "tfedge":
                graph[name].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_cycle_and_accepts_a_dag():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_parser_sees_function_level_and_package_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from tfedge import files\n\ndef f():\n    from tfedge.models import load_model\n    from . import checks\n"
    )
    names = {name for name, _ in _imports(source)}
    assert {"tfedge.files", "tfedge.models", "tfedge.checks"} <= names


def test_module_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 15, "the package was not found"
    cycle = _find_cycle(graph)
    assert cycle is None, "tfedge modules import each other in a circle: " + " -> ".join(cycle or [])


def test_feature_modules_sit_below_saving_and_loading():
    graph = _graph()
    for feature in ("tfedge.pruning", "tfedge.quantization", "tfedge.distillation"):
        assert "tfedge.models" not in graph[feature], f"{feature} imports tfedge.models (it must sit below it)"
    for feature in ("tfedge.pruning", "tfedge.quantization", "tfedge.distillation"):
        assert feature in graph["tfedge.models"], f"tfedge.models does not import {feature} at the top"


def _is_keras3(target: str) -> bool:
    return target.split(".")[0] == "keras" or target == "tensorflow.keras" or target.startswith("tensorflow.keras.")


def test_keras_is_chosen_in_one_place():
    for name, path in _modules().items():
        for target, line in _imports(path):
            where = f"{path.name}:{line} imports {target}"
            if target.split(".")[0] == "tf_keras":
                assert name == "tfedge._keras", f"{where}: use `from tfedge._keras import keras`"
            if _is_keras3(target):
                assert name == "tfedge.keras3", f"{where} (Keras 3): only tfedge/keras3.py may"
        tf_keras_uses = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute)
            and node.attr == "keras"
            and isinstance(node.value, ast.Name)
            and node.value.id in ("tf", "tensorflow")
        ]
        assert name == "tfedge.keras3" or not tf_keras_uses, (
            f"{path.name}:{tf_keras_uses} uses tf.keras (Keras 3 in TF 2.21): use `from tfedge._keras import keras`"
        )


def test_keras_rules_catch_offenders():
    assert _is_keras3("keras.layers") and _is_keras3("tensorflow.keras") and not _is_keras3("tf_keras")
