"""The package layout's rules, checked over every import statement in gram_tf (function-level ones
too): imports only go down the wings, deploy/ stays TensorFlow-free, the convert wing's floors hold,
and no module imports one that imports it back (no cycles at all). The scripts in benchmarks/ (with
experiments/) and tools/ import only gram_tf's public names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gram_tf"
SCRIPT_FOLDERS = ("benchmarks", "tools")

# Floors, bottom to top. A module may import its own wing and anything on a lower floor.
FLOORS = [
    {"gram_tf", "gram_tf.errors", "gram_tf.io_utils", "gram_tf.table", "gram_tf.config", "gram_tf.metrics",
     "gram_tf.run"},
    {"gram_tf.deploy"},
    {"gram_tf.data"},
    {"gram_tf.models"},
    {"gram_tf.train"},
    {"gram_tf.optimize"},
    {"gram_tf.convert"},
    {"gram_tf.report"},
    {"gram_tf.bench"},
    {"gram_tf.pipeline"},
    {"gram_tf.cli", "gram_tf.runtime"},  # faces: the CLI and the deploy wing's old name
]
# Inside the convert wing: the toolkit never imports the strategies, the strategies never the stage.
CONVERT_FLOORS = [{"variants", "tracing", "scoring", "card"}, {"calibration"}, {"recipe"}, {"converter"}, {"guard"}, {"selective", "fast_int8"}, {"stage"}]
TENSORFLOW = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras", "keras_cv", "tf2onnx")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (PKG.parent / name.replace(".", "/") / "__init__.py").is_file()


def exists(name: str) -> bool:
    base = PKG.parent / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(gram_tf modules, top-level external packages) imported anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [(mod, [a.name for a in node.names])]
        for mod, names in targets:
            if mod == "gram_tf" or mod.startswith("gram_tf."):
                subs = [f"{mod}.{n}" for n in names if exists(f"{mod}.{n}")]
                internal.update(subs or [mod])
                if names and len(subs) < len(names):
                    internal.add(mod)
            elif mod:
                external.add(mod.split(".")[0])
    internal.discard(name)
    return internal, external


def graph() -> dict[str, tuple[set[str], set[str]]]:
    return {module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def wing_of(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else name


def floor_of(name: str) -> int:
    for i, floor in enumerate(FLOORS):
        if wing_of(name) in floor:
            return i
    raise AssertionError(f"{name} is on no floor: add it to FLOORS in tests/test_layout.py")


def downward_violations(g) -> list[str]:
    bad = []
    for mod, (internal, _) in g.items():
        for dep in internal:
            if wing_of(dep) == wing_of(mod):
                continue
            up = floor_of(dep) > floor_of(mod) or (floor_of(dep) == floor_of(mod) != 0)  # base modules share floor 0
            if up:
                bad.append(f"{mod} imports {dep} (floor {floor_of(dep)} >= {floor_of(mod)})")
    return bad


def cycles(g) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, (set(), set()))[0]:
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_module_is_on_a_floor():
    for mod in graph():
        floor_of(mod)


def test_imports_only_go_down_the_wings():
    assert downward_violations(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_deploy_imports_no_tensorflow_and_no_other_wing():
    for mod, (internal, external) in graph().items():
        if wing_of(mod) != "gram_tf.deploy":
            continue
        assert not external & set(TENSORFLOW), f"{mod} imports {external & set(TENSORFLOW)}"
        others = {d for d in internal if wing_of(d) not in ("gram_tf.deploy",) and floor_of(d) != 0}
        assert not others, f"{mod} imports {others}"


@pytest.mark.parametrize("wing", ["gram_tf.models"])
def test_models_never_import_the_stages_above(wing):
    above = {"gram_tf.optimize", "gram_tf.convert", "gram_tf.bench", "gram_tf.report"}
    for mod, (internal, _) in graph().items():
        if wing_of(mod) == wing:
            assert not {wing_of(d) for d in internal} & above, mod


def test_convert_floors():
    g = graph()
    level = {name: i for i, floor in enumerate(CONVERT_FLOORS) for name in floor}
    for mod, (internal, _) in g.items():
        if wing_of(mod) != "gram_tf.convert" or mod == "gram_tf.convert":
            continue
        own = mod.rsplit(".", 1)[1]
        for dep in internal:
            if wing_of(dep) == "gram_tf.convert":
                other = dep.rsplit(".", 1)[1] if dep != "gram_tf.convert" else "__init__"
                assert other in level and level[other] < level[own], f"{mod} imports {dep}"


def test_the_checker_sees_a_loop_and_an_upward_import():
    """The rules above can fail: a made-up graph with a cycle and an upward import is caught."""
    fake = {"gram_tf.deploy.a": ({"gram_tf.models.b"}, set()), "gram_tf.models.b": ({"gram_tf.deploy.a"}, set())}
    assert cycles(fake) == [["gram_tf.deploy.a", "gram_tf.models.b"]]
    assert downward_violations(fake) == ["gram_tf.deploy.a imports gram_tf.models.b (floor 3 >= 1)"]


def private_imports(source: str) -> list[str]:
    """Every `gram_tf` import in `source` that names a private module or name (leading underscore; dunders
    such as __version__ are public)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            pairs = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            pairs = [(node.module or "", alias.name) for alias in node.names]
        else:
            continue
        for mod, name in pairs:
            parts = mod.split(".") + ([name] if name else [])
            if parts[0] == "gram_tf" and any(p.startswith("_") and not p.endswith("__") for p in parts):
                bad.append(f"line {node.lineno}: " + (f"from {mod} import {name}" if name else f"import {mod}"))
    return bad


def test_scripts_import_only_public_names():
    scripts = [p for folder in SCRIPT_FOLDERS for p in sorted((PKG.parent / folder).rglob("*.py"))]
    assert len({p.parent for p in scripts}) >= 3, "benchmarks/, benchmarks/experiments/ and tools/ hold no scripts?"
    bad = {str(p.relative_to(PKG.parent)): v for p in scripts if (v := private_imports(p.read_text(encoding="utf-8")))}
    assert not bad, f"scripts importing gram_tf's private names (make the name public or drop the import): {bad}"


def test_the_script_checker_sees_private_imports():
    """The rule above can fail: private modules and names are caught, public ones and dunders are not."""
    source = ("import gram_tf._secret\nfrom gram_tf.train.transfer import _head_model, train\n"
              "def f():\n    from gram_tf.models import __version__, build_classifier\n")
    assert private_imports(source) == ["line 1: import gram_tf._secret",
                                       "line 2: from gram_tf.train.transfer import _head_model"]
