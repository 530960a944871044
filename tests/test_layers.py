"""The layers of the compiler are its folders: a module imports only its own layer or the layers below, and
no two modules import each other, directly or round a circle.

Every module of compiler/, schedules/ and compile.py is parsed with ast, with every import in it (inside
functions too) and the registry's "compiler.module:function" builder strings (compiler/zoo imports those
when a model is built). A module's layer is its folder's (LAYERS, bottom first); a module directly in
compiler/ has a layer of its own name. Imports under `if __name__ == "__main__":` are the module run as a
program, a face, and no importer runs them; a `__main__` module is a face too. The board-side modules
(copied alone onto a board or into the emulated Pi) import nothing of the compiler, not even as a program. The
module map of docs/design.md names every module.
"""
import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Bottom first. A key is a folder of compiler/ ("tuning"), a module directly in compiler/ ("errors"), or
# the top-level packages "schedules" and "compile" (compile.py).
LAYERS = [
    ("base", ["compiler", "errors", "atomic", "paths", "output", "targets"]),
    ("schedules", ["schedules"]),   # the project's schedules: MetaSchedule rules, default schedules
    ("artifact", ["artifact"]),     # the runtime wrapper, the sidecar, the cross linker
    ("device", ["device"]),         # the host, boards behind a tracker, the emulated Pi; verification
    ("zoo", ["zoo"]),               # registered models
    ("frontend", ["frontend"]),     # ONNX in: load, validate, bind shapes, export registered models
    ("passes", ["passes"]),         # the pipeline's phases and fusion
    ("tuning", ["tuning"]),         # MetaSchedule runs and databases
    ("driver", ["driver"]),         # the Python API: compile_model
    ("bench", ["bench"]),           # measurements beside ONNX Runtime and PyTorch
    ("faces", ["cli", "compile_command", "farm", "compile", "__main__"]),
]
LAYER_OF = {key: rank for rank, (_, keys) in enumerate(LAYERS) for key in keys}
LAYER_NAMES = [name for name, _ in LAYERS]
FACES = LAYER_OF["cli"]

# Copied alone onto a board: they import nothing of the compiler, not even as a program.
STANDALONE = ("compiler.artifact.runtime", "compiler.device.board_server", "compiler.device.count_guest",
              "compiler.device.candidate_guest")

BUILDER = re.compile(r"((?:compiler|schedules)(?:\.\w+)+):\w+")


def module_files(root: Path = ROOT) -> dict:
    """{dotted module name ("compiler.tuning.tune", "schedules", "compile"): path}"""
    found = {"compile": root / "compile.py"} if (root / "compile.py").exists() else {}
    for package in ("compiler", "schedules"):
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def layer_key(module: str) -> str:
    """The key of LAYERS that places `module`: its folder under compiler/, or its own name there."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "__main__"
    if parts[0] != "compiler":
        return parts[0]
    return parts[1] if len(parts) > 1 else "compiler"


def layer_of(module: str):
    return LAYER_OF.get(layer_key(module))


def _known(dotted: str, modules: dict) -> str:
    """A dotted import target -> the module it loads ("compiler.zoo.lookup" -> "compiler.zoo")."""
    parts = dotted.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def _is_main_guard(node) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and getattr(test.comparators[0], "value", None) == "__main__")


def imports_of(module: str, modules: dict = None, program: bool = True) -> dict:
    """{imported project module: first line} for `module`; with `program=False`, not the imports under
    `if __name__ == "__main__":`, which no importer of the module executes."""
    modules = MODULES if modules is None else modules
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    as_program = set() if program else {id(inner) for node in ast.walk(tree) if _is_main_guard(node)
                                        for inner in ast.walk(node)}
    found = {}
    for node in ast.walk(tree):
        if id(node) in as_program:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from compiler import zoo` imports compiler.zoo; `from compiler.errors import UserError` errors
            targets = [f"{source}.{alias.name}" for alias in node.names] or [source]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and BUILDER.fullmatch(node.value):
            targets = [BUILDER.fullmatch(node.value).group(1)]
        for target in targets:
            if target.split(".")[0] in ("compiler", "schedules", "compile"):
                known = _known(target, modules)
                if known:
                    found.setdefault(known, node.lineno)
    found.pop(module, None)
    return found


def upward_imports(modules: dict) -> list:
    """Every import that goes up a layer, as a readable line."""
    found = []
    for module in sorted(modules):
        layer = layer_of(module)
        for imported, line in sorted(imports_of(module, modules, program=False).items()):
            if layer_of(imported) > layer:
                found.append(f"{modules[module].relative_to(modules[module].parents[len(module.split('.')) - 1])}"
                             f":{line} imports {imported} ({LAYER_NAMES[layer_of(imported)]} above "
                             f"{LAYER_NAMES[layer]})")
    return found


def circles(modules: dict) -> list:
    """Import circles among project modules (strongly connected components of more than one module), each
    as a sorted list; the imports a program makes under its main guard are left out, as no importer runs them."""
    graph = {module: [m for m in imports_of(module, modules, program=False) if m in modules] for module in modules}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_module_has_a_layer():
    """A new folder or top-level module must be placed: add it to LAYERS."""
    assert sorted(m for m in MODULES if layer_of(m) is None) == []


def test_few_modules_directly_in_the_package():
    """Everything but the base, the driver and the faces lives in a folder named for its layer."""
    top = [m for m in MODULES if m.count(".") == 1 and (ROOT / "compiler" / f"{m.split('.')[1]}.py").is_file()]
    assert len(top) <= 11, top


@pytest.mark.parametrize("module", STANDALONE)
def test_the_board_side_imports_nothing_of_the_compiler(module):
    """runtime.py and board_server.py are copied alone onto a board: not even errors, not even as a program."""
    assert imports_of(module, program=True) == {}


def test_imports_go_down_the_layers():
    assert upward_imports(MODULES) == []


def test_no_import_circles():
    assert circles(MODULES) == []


def _tree(tmp_path, files: dict) -> dict:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(tmp_path)


def test_the_parser_sees_every_form_of_import(tmp_path):
    """Absolute, relative, parent-relative, inside a function, a registry builder string, a main guard."""
    modules = _tree(tmp_path, {
        "compiler/__init__.py": "", "compiler/errors.py": "if __name__ == '__main__':\n    from .driver import main\n",
        "compiler/driver.py": "", "compiler/zoo/__init__.py": "from . import size\nB = 'compiler.driver:compile_model'\n",
        "compiler/zoo/size.py": "from ..errors import UserError\n",
        "compiler/tuning/__init__.py": "", "compiler/tuning/tune.py": (
            "import compiler.errors\ndef f():\n    from ..driver import x\n    from compiler import zoo, paths\n"
            "    import schedules\n"),
        "schedules/__init__.py": ""})
    assert imports_of("compiler.tuning.tune", modules) == {
        "compiler.errors": 1, "compiler.driver": 3, "compiler.zoo": 4, "compiler": 4, "schedules": 5}
    assert imports_of("compiler.zoo", modules) == {"compiler.zoo.size": 1, "compiler.driver": 2}
    assert imports_of("compiler.zoo.size", modules) == {"compiler.errors": 1}
    assert imports_of("compiler.errors", modules) == {"compiler.driver": 2}
    assert imports_of("compiler.errors", modules, program=False) == {}


def test_an_upward_import_fails(tmp_path):
    """The check can fail: a device module that imports the tuning layer is reported."""
    modules = _tree(tmp_path, {
        "compiler/__init__.py": "", "compiler/errors.py": "",
        "compiler/device/__init__.py": "", "compiler/device/session.py": "from compiler.tuning import tune\n",
        "compiler/tuning/__init__.py": "", "compiler/tuning/tune.py": "from compiler.device import session\n"})
    assert upward_imports(modules) == ["compiler/device/session.py:1 imports compiler.tuning.tune (tuning above device)"]


def test_a_circle_fails(tmp_path):
    """The check can fail: two modules of one layer that import each other, and a longer circle."""
    modules = _tree(tmp_path, {
        "compiler/__init__.py": "",
        "compiler/bench/__init__.py": "", "compiler/bench/command.py": "from compiler.bench import models\n",
        "compiler/bench/models.py": "def f():\n    from compiler.bench.command import publish\n",
        "compiler/tuning/__init__.py": "", "compiler/tuning/a.py": "from compiler.tuning import b\n",
        "compiler/tuning/b.py": "from compiler.tuning import c\n", "compiler/tuning/c.py": "import compiler.tuning.a\n",
        "compiler/tuning/d.py": "from compiler.tuning import a\n"})
    assert circles(modules) == [["compiler.bench.command", "compiler.bench.models"],
                                ["compiler.tuning.a", "compiler.tuning.b", "compiler.tuning.c"]]


def test_the_module_map_names_every_module():
    """docs/design.md's module map has a row naming each module of compiler/ and schedules/ (its path, or its
    file name in a row of its folder): a reader finds where every concept lives."""
    rows = [line for line in (ROOT / "docs" / "design.md").read_text().splitlines() if line.startswith("| ")]
    missing = []
    for name, path in module_files().items():
        if path.name == "__init__.py" or name == "compile":
            continue
        relative = str(path.relative_to(ROOT))
        folder = str(path.parent.relative_to(ROOT))
        if not any(relative in row or (folder in row and path.name in row) for row in rows):
            missing.append(relative)
    assert not missing, f"docs/design.md's module map does not name: {', '.join(missing)}"
