"""No dead code in what ships in the Lambda package (app.py and every module of chalicelib/).

Every public function and class is used by deployed code (app.py, chalicelib/): a helper only tests or
tools need belongs with them. Names are read from the syntax tree (real references, not words in
docstrings)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from chalicelib.answer import store as template_store

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]
MODULES = sorted(
    str(p.relative_to(ROOT / "chalicelib").with_suffix("")) for p in DEPLOYED[1:] if p.name != "__init__.py"
)

# Public on purpose though no deployed code calls it; each says who does.
NOT_DEAD = {
    "resources": {"reset"},  # the CLI and the tests forget clients after they change the environment
    "calls/schedule": {"in_window"},  # the window tests' oracle for next_opening
}


def _referenced(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.rsplit(".", 1)[-1])
    return names


@pytest.mark.parametrize("module", MODULES)
def test_public_names_are_used_by_deployed_code(module):
    used: set[str] = set()
    for path in DEPLOYED:
        used |= _referenced(ast.parse(path.read_text(), str(path)))
    tree = ast.parse((ROOT / "chalicelib" / f"{module}.py").read_text())
    public = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    ]
    # Functions bound by assignment (metrics: `count = recorder.count`) are public functions too.
    public += [
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Attribute | ast.Call)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.islower() and not target.id.startswith("_")
    ]
    assert public, module
    assert [name for name in public if name not in used and name not in NOT_DEAD.get(module, ())] == []


def test_template_store_public_surface_is_the_store_and_its_errors():
    """Module-internal helpers (e.g. the stale-serving log line) are private."""
    public = {
        name
        for name, value in vars(template_store).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == template_store.__name__
    }
    assert public == {"TemplateStore", "TemplateMissing", "TemplateBroken", "StoreUnavailable"}
