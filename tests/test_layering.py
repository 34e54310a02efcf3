"""The package's layers import only downward (docs/architecture.md): base <- data <- model <- pretrained <-
distill, and no two modules of these layers import each other. Every import counts, the ones inside
functions and under TYPE_CHECKING too: a lazy import up the stack is still a cycle waiting to happen.

The torch-free path (the ONNX runner and policy, the server, the processor specification both processors
share) imports no torch, directly or through any shallowpi module it loads (parent packages included);
only TYPE_CHECKING imports are exempt there, since they never run. tests/test_onnx_runner_no_torch.py runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "shallowpi"
# Lowest first; a module may import its own layer and the layers before it. Modules above these (infer,
# bench, serve, testing, export, sim, study, commands, cli) may import any of them and are not listed.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (
        "shallowpi.errors",
        "shallowpi.atomic",
        "shallowpi.jsonfile",
        "shallowpi.cameras",
        "shallowpi.device",
        "shallowpi.hub",
        "shallowpi.paths",
        "shallowpi.observation",
    ),
    "data": ("shallowpi.data",),
    "model": ("shallowpi.model",),
    "pretrained": ("shallowpi.pretrained",),
    "distill": ("shallowpi.distill",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every shallowpi import in `source`: import / from-import statements anywhere in the
    file (relative ones resolved) and importlib.import_module("shallowpi....") calls."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # `from shallowpi.data import transforms` imports that submodule; `... import Stats` the package
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found += [(node.lineno, m) for m in subs] or [(node.lineno, base)]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if _within(name, ("shallowpi",))]


def _imports_of(module: str) -> list[tuple[int, str]]:
    path = MODULES[module]
    return imported_modules(path.read_text(), module, path.name == "__init__.py")


def _layer_of(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS.values()):
        if _within(module, prefixes):
            return i
    return None


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the graph `edges` as [a, b, ..., a]; None if it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in edges.get(m, []):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in edges:
        if m not in state and (found := visit(m)):
            return found
    return None


# Modules that must import where torch is not installed (a robot running `serve --backend onnxruntime`).
TORCH_FREE = (
    "shallowpi.data.processor_spec",
    "shallowpi.onnx_runtime",
    "shallowpi.serve.server",
    "shallowpi.serve.served_policy",
    "shallowpi.serve.obs_mapping",
    "shallowpi.serve.msgpack_numpy",
    "shallowpi.infer.actions",
)


def runtime_imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import statement that can run (anything but `if TYPE_CHECKING:` blocks),
    any package, relative ones resolved; `from X import y` counts X.y when that is a shallowpi module."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found.extend(
                (node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in MODULES
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def _loaded_with(module: str) -> set[str]:
    """The shallowpi modules importing `module` can load: itself, its parent packages, what they import."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        path = MODULES[m]
        todo += [n for _, n in runtime_imports(path.read_text(), m, path.name == "__init__.py")]
    return seen


def test_torch_free_path_imports_no_torch() -> None:
    roots = [m for m in MODULES if _within(m, TORCH_FREE)]
    loaded = set().union(*(_loaded_with(r) for r in roots))
    torch_imports = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name}"
        for m in sorted(loaded)
        for line, name in runtime_imports(MODULES[m].read_text(), m, MODULES[m].name == "__init__.py")
        if _within(name, ("torch", "safetensors.torch"))
    ]
    assert torch_imports == []
    assert {"shallowpi.data", "shallowpi.data.processor_spec", "shallowpi.serve.served_policy"} <= loaded


def test_the_torch_free_check_sees_what_runs() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import torch\n"
        "else:\n"
        "    import numpy\n"
        "def f():\n"
        "    from torch import nn\n"
        "from . import processor_spec\n"
    )
    names = {n for _, n in runtime_imports(source, "shallowpi.data.prompt")}
    assert names == {"typing", "numpy", "torch", "shallowpi.data", "shallowpi.data.processor_spec"}


@pytest.mark.parametrize("layer", list(LAYERS))
def test_each_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    index = list(LAYERS).index(layer)
    allowed = tuple(p for prefixes in list(LAYERS.values())[: index + 1] for p in prefixes)
    members = [m for m in MODULES if _layer_of(m) == index]
    assert members, f"no module in layer {layer!r}: LAYERS is out of date"
    upward = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name}"
        for m in members
        for line, name in _imports_of(m)
        if not _within(name, allowed)
    ]
    assert upward == []


def test_no_import_cycles_within_the_layers() -> None:
    """Package __init__ files (which re-export their modules) are left out of the graph."""
    layered = [m for m in MODULES if _layer_of(m) is not None and MODULES[m].name != "__init__.py"]
    edges = {m: sorted({n for _, n in _imports_of(m) if n in layered and n != m}) for m in layered}
    assert find_cycle(edges) is None


def test_the_checks_see_lazy_relative_and_importlib_imports_and_cycles() -> None:
    source = (
        "import numpy\n"
        "from shallowpi.errors import UserError\n"
        "from shallowpi import sim\n"
        "from shallowpi.data import transforms, Stats\n"
        "def load():\n"
        "    from shallowpi.model.checkpoint import read_config\n"
        "    from ..distill import trainer\n"
        "    from . import stats\n"
        "    import importlib\n"
        "    return importlib.import_module('shallowpi.infer.engine')\n"
    )
    names = {n for _, n in imported_modules(source, "shallowpi.data.processor")}
    assert names == {
        "shallowpi.errors",
        "shallowpi.sim",
        "shallowpi.data.transforms",
        "shallowpi.model.checkpoint",
        "shallowpi.distill.trainer",
        "shallowpi.data.stats",
        "shallowpi.infer.engine",
    }
    # stats -> lerobot_dataset -> stats, as it once was (the stats side lazily)
    edges = {"stats": ["lerobot_dataset"], "lerobot_dataset": ["stats", "video"], "video": []}
    assert find_cycle(edges) == ["stats", "lerobot_dataset", "stats"]
    assert find_cycle({"stats": [], "lerobot_dataset": ["stats", "video"], "video": []}) is None


# The served-policy base owns the checks; a backend only says how it predicts.
SERVED_BASE = "shallowpi.serve.served_policy"
BASE_CHECKS = {"check_actions", "check_sample", "check_state", "camera_sources", "image_layout"}
# Hooks with a default in the base that a backend may refine (its processor's prompt rule, its metadata, how
# it predicts a real-time-chunking request: the base refuses those).
BACKEND_HOOKS = {"check_task", "describe", "predict_rtc"}


def _served_backends() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", None)) == "ServedPolicy" for b in node.bases
            ):
                found.append((name, node))
    return found


def _base_methods() -> tuple[set[str], set[str]]:
    """(abstract methods a backend provides, concrete ones it must inherit) of ServedPolicy; the hooks
    count as neither."""
    tree = ast.parse(MODULES[SERVED_BASE].read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "ServedPolicy")
    abstract, concrete = set(), set()
    for f in cls.body:
        if isinstance(f, ast.FunctionDef) and f.name != "__init__":
            is_abstract = any(
                getattr(d, "id", getattr(d, "attr", "")) == "abstractmethod" for d in f.decorator_list
            )
            (abstract if is_abstract else concrete).add(f.name)
    return abstract, concrete - BACKEND_HOOKS


def test_no_backend_reimplements_a_check_the_base_does() -> None:
    backends = _served_backends()
    assert {m for m, _ in backends} >= {
        "shallowpi.serve.policy",
        "shallowpi.onnx_runtime.policy",
        "shallowpi.testing.dummy_policy",
    }
    abstract, concrete = _base_methods()
    assert "predict" in abstract and {"prepare", "infer", "max_request_bytes"} <= concrete
    bad = []
    for module, cls in backends:
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef) and node.name in concrete:
                bad.append(f"{module}.{cls.name}.{node.name} overrides the base's")
            if isinstance(node, ast.Call):
                called = getattr(node.func, "id", getattr(node.func, "attr", None))
                if called in BASE_CHECKS:
                    bad.append(f"{module}.{cls.name} calls {called} (the base's check)")
    assert not bad, bad
