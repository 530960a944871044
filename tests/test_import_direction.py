"""The import direction of the compiler package: a module imports only modules of its own layer or below.

Every module under compiler/ (and compile.py) is parsed with ast, with every import in it, inside functions
too, and with the registry's "compiler.module:function" builder strings (compiler/zoo imports those when a
model is built). The layers are data (LAYERS below): a new module fails `test_every_module_has_a_layer` until
it is placed. An arrow that goes up a layer fails unless KNOWN_EXCEPTIONS lists it with the reason; imports
under `if __name__ == "__main__":` are the module run as a program (a face: `python -m compiler.farm` calls
compiler/cli.py) and no importer runs them. The runtime (the device side, copied alone onto a board) imports
nothing of the compiler, without exception, not even as a program.
"""
import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "compiler"

ERRORS, ATOMIC, RUNTIME, DEVICE, BLOCKS, API, FACES = range(7)
LAYER_NAMES = ["errors", "atomic", "runtime", "device layer", "building blocks", "api", "faces"]

LAYERS = {
    "compiler": ERRORS,  # the package's __init__: imports nothing
    "errors": ERRORS,
    "atomic": ATOMIC,
    "runtime": RUNTIME,
    # the one way to reach a device (host, tracker, emulated farm) and to describe it; the board's server
    **dict.fromkeys(["device", "device_server", "farm", "emulator", "cache"], DEVICE),
    **dict.fromkeys([
        "onnx_model", "onnx_export", "shape_binding", "attendnext", "fusion", "dcac_patterns", "pipeline",
        "fast_math", "linker", "targets", "artifact", "database_files", "tuning_db", "tuning_seed",
        "tuning_policy", "tuning_checkpoint", "tuning_report", "measure_inputs", "tune_builder", "verify", "tuning", "profile",
        "explain",
        "zoo", "zoo.fbnet", "zoo.layers", "zoo.mobilenetv3", "zoo.mobileone", "zoo.mobilevit", "zoo.size",
        "zoo.untrained",
    ], BLOCKS),
    "api": API,
    **dict.fromkeys(["bench", "bench_models", "bench_variants", "compile", "cli", "compile_command", "__main__"],
                    FACES),  # cli: `python -m compiler <command>`; compile.py its `compile` command
}

# (importer, imported): arrows that go up a layer, each with why it is tolerated. None for the standalone ones.
KNOWN_EXCEPTIONS = {}

# Copied alone onto a board: they import nothing of the compiler, not even as a program.
STANDALONE = ("runtime", "device_server")

BUILDER = re.compile(r"(compiler(?:\.\w+)+):\w+")


def module_files() -> dict:
    """{module name relative to the package ("zoo.size"; "compiler" for __init__, "compile" for compile.py): path}"""
    found = {"compile": ROOT / "compile.py"}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "compiler"] = path
    return found


MODULES = module_files()


def _known(dotted: str) -> str:
    """"compiler.zoo.size" -> "zoo.size"; a name inside a module ("compiler.zoo.lookup") -> its module."""
    parts = dotted.split(".")[1:]
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts) or "compiler"


def _is_main_guard(node) -> bool:
    """`if __name__ == "__main__":`"""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and len(test.comparators) == 1
            and getattr(test.comparators[0], "value", None) == "__main__")


def imports_of(module: str, program: bool = True) -> dict:
    """{imported module: first line} for every import of the compiler (or compile.py) in `module`; with
    `program=False`, not those under `if __name__ == "__main__":` (the module run as a program, a face
    itself: `python -m compiler.farm` calls compiler/cli.py), which no importer of the module executes."""
    path = MODULES[module]
    package = "compiler" + ("" if module in ("compiler", "compile") else "." + module)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0] or "compiler"
    tree = ast.parse(path.read_text(), str(path))
    as_program = set() if program else {id(inner) for node in ast.walk(tree) if _is_main_guard(node)
                                        for inner in ast.walk(node)}
    found = {}
    for node in ast.walk(tree):
        targets = []
        if id(node) in as_program:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from compiler import zoo` imports the module compiler.zoo; `from .errors import UserError` .errors
            targets = [f"{source}.{alias.name}" for alias in node.names] or [source]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and BUILDER.fullmatch(node.value):
            targets = [BUILDER.fullmatch(node.value).group(1)]
        for target in targets:
            if target == "compile":
                found.setdefault("compile", node.lineno)
            elif target == "compiler" or target.startswith("compiler."):
                found.setdefault(_known(target), node.lineno)
    found.pop(module, None)
    return found


def test_every_module_has_a_layer():
    """A new module must be placed in the layering: add it to LAYERS."""
    assert sorted(set(MODULES) - set(LAYERS)) == []


@pytest.mark.parametrize("module", STANDALONE)
def test_the_board_side_imports_nothing_of_the_compiler(module):
    """runtime.py and device_server.py are copied alone onto a board: not even errors or atomic, not even
    when run as a program."""
    assert imports_of(module, program=True) == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    layer = LAYERS.get(module)
    if layer is None:
        pytest.skip(f"{module} has no layer (test_every_module_has_a_layer fails)")
    upward = [f"{MODULES[module].relative_to(ROOT)}:{line} imports {imported} "
              f"({LAYER_NAMES[LAYERS[imported]]} above {LAYER_NAMES[layer]})"
              for imported, line in sorted(imports_of(module, program=False).items())
              if imported in LAYERS and LAYERS[imported] > layer and (module, imported) not in KNOWN_EXCEPTIONS]
    unplaced = [imported for imported in imports_of(module, program=True) if imported not in LAYERS]
    assert upward == [] and unplaced == []


def test_known_exceptions_name_placed_modules_and_spare_the_runtime():
    for importer, imported in KNOWN_EXCEPTIONS:
        assert importer in LAYERS and imported in LAYERS and LAYERS[imported] > LAYERS[importer]
        assert importer not in STANDALONE


def test_the_parser_sees_every_form_of_import(tmp_path, monkeypatch):
    """Absolute, relative, parent-relative, inside a function, and a registry builder string."""
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text("from . import size\nB = 'compiler.api:compile_model'\n")
    (tmp_path / "zoo" / "size.py").write_text("from ..errors import UserError\n")
    (tmp_path / "errors.py").write_text("if __name__ == '__main__':\n    from .api import main\n")
    (tmp_path / "api.py").write_text("")
    (tmp_path / "tuning.py").write_text("import compiler.errors\ndef f():\n    from .api import x\n"
                                        "    from compiler import zoo, compile_model\n    import compile\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {
        "compiler": tmp_path / "__init__.py", "errors": tmp_path / "errors.py", "api": tmp_path / "api.py",
        "tuning": tmp_path / "tuning.py", "zoo": tmp_path / "zoo" / "__init__.py", "zoo.size": tmp_path / "zoo" / "size.py"})
    assert imports_of("tuning") == {"errors": 1, "api": 3, "zoo": 4, "compiler": 4, "compile": 5}
    assert imports_of("zoo") == {"zoo.size": 1, "api": 2}
    assert imports_of("zoo.size") == {"errors": 1}
    assert imports_of("errors") == {"api": 2} and imports_of("errors", program=False) == {}
