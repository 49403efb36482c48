"""The package's shape: stages import only earlier stages, and start-up stays light."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import stylize

PACKAGE = Path(stylize.__file__).parent
# Each stage may import its own modules and those of earlier stages only.
STAGES = ("shared", "model", "training", "inference", "report", "cli")


def _stage(module: str) -> str:
    """``stylize.training.loop`` -> ``training``; top-level modules are shared."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "shared"


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


def _imports(path: Path) -> list[str]:
    """Every stylize module ``path`` imports, at any depth (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stylize"):
            assert node.level == 0, f"{path}: relative import; the layout test reads absolute ones"
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("stylize")]
    return found


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.parent.name != "models")


@pytest.mark.parametrize("path", MODULES, ids=[_module_name(path) for path in MODULES])
def test_no_module_imports_a_later_stage(path: Path) -> None:
    name = _module_name(path)
    if name in ("stylize", "stylize.__main__"):
        return  # the package root names the public API lazily; __main__ runs the CLI
    rank = STAGES.index(_stage(name))
    later = [module for module in _imports(path) if STAGES.index(_stage(module)) > rank]
    assert later == [], f"{name} ({_stage(name)}) imports later stages: {later}"


def test_every_stage_has_modules() -> None:
    stages = {_stage(_module_name(path)) for path in MODULES}
    assert stages == set(STAGES)


def test_the_cli_and_inference_load_without_torchvision_onnx_or_av() -> None:
    """Start-up cost: torchvision alone adds more than a second to every command."""
    code = (
        "import sys, stylize, stylize.cli.app, stylize.inference.stylizer, stylize.inference.video; "
        "from stylize import load_stylizer, Stylizer, TrainConfig; "
        "print(sorted(m for m in ('torchvision', 'onnx', 'onnxruntime', 'av') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_public_api_resolves_every_name_it_lists() -> None:
    for name in stylize.__all__:
        assert getattr(stylize, name) is not None
    assert set(stylize.__all__) <= set(dir(stylize))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        stylize.__getattr__("nonsense")


def test_type_checkers_see_every_public_name_where_it_is_imported_from() -> None:
    """The lazy ``__getattr__`` hides the API from editors; the TYPE_CHECKING
    imports show it, and must name the same things from the same modules."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {
        alias.asname: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name  # "import X as X": a re-export
    }
    assert seen == stylize._HOME


# Public functions that raise StylizeError for what a user gives them; their docstrings say when.
RAISING_FUNCTIONS = (
    "load_model", "load_stylizer", "train", "compare", "save_model", "load_image", "export_model", "stylize_video",
)  # fmt: skip


def test_every_public_name_has_a_docstring_of_its_own() -> None:
    """Not inherited, and not the signature ``dataclass`` writes when there is none;
    functions that raise StylizeError, and settings that validate themselves, say when."""
    for name in stylize.__all__:
        value = getattr(stylize, name)
        doc = inspect.getdoc(value)
        assert value.__doc__ and doc, f"{name} has no docstring"
        assert not doc.startswith(f"{name}("), f"{name} has only the dataclass signature as its docstring"
        validates = dataclasses.is_dataclass(value) and "__post_init__" in vars(value)
        if name in RAISING_FUNCTIONS or validates:
            assert "Raises" in doc, f"{name}'s docstring does not say what it raises"
