"""The package's shape, read from its source with ``ast``: imports point down (no cycle, counting
the imports inside functions too; each stage imports only the stages below it), and no module
imports another's private name."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    out = {}
    for p in (root / "nst_jax").rglob("*.py"):
        name = ".".join(p.relative_to(root).with_suffix("").parts)
        out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> list[tuple[str, str]]:
    """(module imported, name imported from it or "") for every ``from``/``import`` of the package,
    at any depth of the file (function-local imports included)."""
    out = []
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in modules:
                    out.append((full, ""))
                elif target in modules:
                    out.append((target, alias.name))
        elif isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name in modules]
    return out


# The stages of the data path, bottom to top (README, "How it fits together"): a module may import
# its own stage and the stages before it, never one after it.
STAGES = (("errors", "files"), ("image",), ("network",), ("weights",), ("program",), ("objective",),
          ("engine",), ("control",), ("video",), ("cli", "serve"), ("entry", "__main__", ""))


def stage(module: str) -> int:
    """The index in ``STAGES`` of a module of the package (``nst_jax.engine.loop`` -> engine's)."""
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(STAGES) if top in names)


def upward_imports(root: pathlib.Path) -> list[str]:
    """Every import of a later stage by an earlier one, as ``"a imports b"``."""
    modules = _modules(root)
    return [f"{name} imports {t}" for name, path in modules.items()
            for t, _ in _imports(name, path, modules) if stage(t) > stage(name)]


def check(root: pathlib.Path) -> tuple[list[str], list[list[str]]]:
    """(private names imported across modules, import cycles) of the package under ``root``."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    private = []
    for name, path in modules.items():
        edges = _imports(name, path, modules)
        # a package's __init__ re-exporting its own modules is not an arrow back up
        graph[name] = {t for t, _ in edges if t != name and not name.startswith(t + ".")}
        private += [f"{name} imports {t}.{n}" for t, n in edges if n.startswith("_") and not n.startswith("__")]
        private += [f"{name} imports the private module {t}" for t, _ in edges
                    if any(part.startswith("_") and not part.startswith("__") for part in t.split("."))]
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str], done: set[str]) -> None:
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in done:
            return
        done.add(m)
        for t in sorted(graph.get(m, ())):
            visit(t, stack + [m], done)

    seen: set[str] = set()
    for m in sorted(graph):
        visit(m, [], seen)
    return private, cycles


def test_no_import_cycle_and_no_private_name_across_modules():
    private, cycles = check(ROOT)
    assert not private, private
    assert not cycles, cycles[:5]


def test_the_structure_check_sees_a_cycle_and_a_private_import(tmp_path):
    """The check above can fail: two modules importing each other (one inside a function) and a
    private name imported across modules are both caught."""
    pkg = tmp_path / "nst_jax"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\nfrom .a import _hidden\n")
    private, cycles = check(tmp_path)
    assert private == ["nst_jax.b imports nst_jax.a._hidden"]
    assert cycles and set(cycles[0]) == {"nst_jax.a", "nst_jax.b"}


def test_each_stage_imports_only_the_stages_below_it():
    assert {m.split(".")[1] for m in _modules(ROOT) if m.count(".") >= 1} <= {n for names in STAGES for n in names}
    assert not upward_imports(ROOT)


def test_the_stage_check_sees_an_upward_import(tmp_path):
    pkg = tmp_path / "nst_jax"
    (pkg / "network").mkdir(parents=True)
    (pkg / "engine").mkdir()
    for f in ("__init__.py", "network/__init__.py", "engine/__init__.py", "engine/loop.py"):
        (pkg / f).write_text("")
    (pkg / "network" / "vgg.py").write_text("def f():\n    from ..engine import loop\n")
    assert upward_imports(tmp_path) == ["nst_jax.network.vgg imports nst_jax.engine.loop"]


# Size limits (the brief: no module over ~500 lines, no function over ~60, unless it is a table).
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 66  # code lines, the docstring not counted: "about 60"
TABLES = {
    # StyleConfig's 54 fields, each with its part, help text and CLI facts (lines 145-250): the one
    # place a setting is declared, a table read by the CLI, `presets` and the docs.
    "nst_jax.program.config": 540,
}


def oversized(root: pathlib.Path) -> list[str]:
    """Modules over their line limit and functions over ``MAX_FUNCTION_LINES`` code lines."""
    out = []
    for name, path in _modules(root).items():
        src = path.read_text()
        if len(src.splitlines()) > TABLES.get(name, MAX_MODULE_LINES):
            out.append(f"{name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                        isinstance(first.value.value, str):
                    lines -= first.end_lineno - first.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{name}.{node.name}: {lines} lines")
    return out


def test_no_module_or_function_over_its_size():
    assert not oversized(ROOT)


def test_the_size_check_sees_a_long_function(tmp_path):
    pkg = tmp_path / "nst_jax"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (pkg / "a.py").write_text('def f():\n    """Doc."""\n' + body)
    assert oversized(tmp_path) == [f"nst_jax.a.f: {MAX_FUNCTION_LINES + 1} lines"]
