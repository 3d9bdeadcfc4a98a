"""The floors of ``wm_video``: imports only go down, peers stay apart, no module imports itself back.

Read from the source with ``ast`` (nothing is imported), so an import inside a function or under
``if TYPE_CHECKING:`` counts like one at the top of the file: they hide the graph, they do not remove an edge.
The floors, bottom up (a module may import its own floor and the floors below):

    0  utils/, config.py (imports nothing of the project), recipes.py, the package itself
    1  models/, metrics/
    2  world_model.py, world_model_index.py, world_model_env.py, model_card.py, task_text.py (the world-model core,
       its index, its card, and the task text its sampling verbs share)
    3  data/
    4  envs/ (simulator adapters, policies and simulator collection)
    5  evaluation/ (every scoring protocol)
    6  training/, generation/, planning/ (peers: none imports another)
    7  play/ (the browser page: a session over the gym env, driven by keys or planning's agents), commands/
       (thin adapters), registry.py (gathers every package's config presets for them), assembly.py (a
       world-model folder from trained parts: it consolidates training checkpoints)
    8  demo.py
    9  cli.py, __main__.py (the entry point)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "wm_video"

FLOORS: dict[str, int] = {
    "wm_video": 0,
    "wm_video.utils": 0,
    "wm_video.config": 0,
    "wm_video.recipes": 0,
    "wm_video.models": 1,
    "wm_video.metrics": 1,
    "wm_video.world_model": 2,
    "wm_video.world_model_index": 2,
    "wm_video.world_model_env": 2,
    "wm_video.model_card": 2,
    "wm_video.task_text": 2,
    "wm_video.data": 3,
    "wm_video.envs": 4,
    "wm_video.evaluation": 5,
    "wm_video.training": 6,
    "wm_video.generation": 6,
    "wm_video.planning": 6,
    "wm_video.play": 7,
    "wm_video.commands": 7,
    "wm_video.registry": 7,
    "wm_video.assembly": 7,
    "wm_video.demo": 8,
    "wm_video.cli": 9,
    "wm_video.__main__": 9,
}
PEERS = ("wm_video.training", "wm_video.generation", "wm_video.planning")
NOT_IN_MODELS = ("lightning", "pytorch_lightning", "deepspeed")  # models/ is plain single-device PyTorch

# Edges that break a rule today, in parts of the tree other work is re-layering; each says why it is still here.
# (importer, imported): why. Remove an entry when its import goes; a stale entry fails the test too.
KNOWN: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The project modules an import statement loads (``from pkg import mod`` names the submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolve against the importer's package
            package = importer.split(".")
            if MODULES[importer].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name.startswith("wm_video") and name != importer:
            out.append(name)
    return out


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(project modules imported, top-level names of everything imported) by module ``name``, anywhere in it."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    project, top = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            top.add(node.module.split(".")[0])
        else:
            continue
        project.update(_resolve(name, node))
    return project, top


GRAPH: dict[str, set[str]] = {}
TOP: dict[str, set[str]] = {}
for _name in MODULES:
    GRAPH[_name], TOP[_name] = _imports(_name)


def _owner(module: str) -> str:
    """The longest entry of FLOORS that ``module`` is or lies in (``wm_video`` itself only names the package)."""
    best = max((k for k in FLOORS if module == k or (k != "wm_video" and module.startswith(k + "."))), key=len,
               default=None)
    assert best is not None, f"{module} sits on no floor: add it to FLOORS"
    return best


def _edges() -> list[tuple[str, str]]:
    return [(a, b) for a in GRAPH for b in sorted(GRAPH[a])]


def _upward() -> set[tuple[str, str]]:
    return {(a, b) for a, b in _edges() if FLOORS[_owner(b)] > FLOORS[_owner(a)]}


def _between_peers() -> set[tuple[str, str]]:
    return {(a, b) for a, b in _edges()
            if _owner(a) in PEERS and _owner(b) in PEERS and _owner(a) != _owner(b)}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(GRAPH):
        if start in index:
            continue
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(GRAPH[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _cycle_edges(component: list[str]) -> set[tuple[str, str]]:
    members = set(component)
    return {(a, b) for a in component for b in GRAPH[a] if b in members}


def test_every_module_sits_on_a_floor():
    for name in MODULES:
        _owner(name)


def test_no_import_goes_up_a_floor():
    bad = sorted(e for e in _upward() if e not in KNOWN)
    assert not bad, "imports that go up a floor (move the code down, or the import up):\n" + "\n".join(
        f"  {a} (floor {FLOORS[_owner(a)]}) imports {b} (floor {FLOORS[_owner(b)]})" for a, b in bad)


def test_peers_of_floor_6_do_not_import_each_other():
    bad = sorted(e for e in _between_peers() if e not in KNOWN)
    assert not bad, "training/, generation/ and planning/ are peers; these import one another:\n" + "\n".join(
        f"  {a} imports {b}" for a, b in bad)


def test_no_import_cycle():
    bad = [c for c in _cycles() if not _cycle_edges(c) & KNOWN.keys()]
    assert not bad, "import cycles (put the shared piece in the lower module it belongs to):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in bad)


def test_models_never_import_lightning_or_deepspeed():
    bad = {name: sorted(TOP[name] & set(NOT_IN_MODELS)) for name in MODULES
           if _owner(name) == "wm_video.models" and TOP[name] & set(NOT_IN_MODELS)}
    assert not bad, f"models/ is plain PyTorch (training/ applies the rest); these import {NOT_IN_MODELS}: {bad}"


def test_config_imports_nothing_of_the_project():
    assert not GRAPH["wm_video.config"], f"wm_video/config.py imports {sorted(GRAPH['wm_video.config'])}"


def test_known_entries_are_still_needed():
    """Each KNOWN entry names an edge that exists and still breaks a rule, so the list only shrinks."""
    breaking = _upward() | _between_peers() | {e for c in _cycles() for e in _cycle_edges(c)}
    stale = sorted(e for e in KNOWN if e not in breaking)
    assert not stale, f"KNOWN entries no longer needed (remove them): {stale}"


@pytest.mark.parametrize("source, expected", [
    ("from wm_video.training import checkpointing", {"wm_video.training.checkpointing"}),
    ("from wm_video.data.split import split_dataset", {"wm_video.data.split"}),
    ("import wm_video.utils.atomic", {"wm_video.utils.atomic"}),
    ("from . import atomic", {"wm_video.utils.atomic"}),
])
def test_resolve_reads_imports_as_python_does(source, expected):
    node = ast.parse(source).body[0]
    assert set(_resolve("wm_video.utils.logs", node)) == expected
