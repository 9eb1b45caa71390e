"""The package's shape: imports flow one way (no cycles; evaluation and rendering never reach the
trainers), imports sit at the top of each module, and no module outgrows one concern."""

import ast
import pathlib

from helpers import REPO

PACKAGE = REPO / "edn_jax"
MAX_LINES = 500
# Function-level imports allowed: the CLI picks a mode's module when it runs (TensorFlow, TFDS and
# MediaPipe take seconds to import), MediaPipe loads only when a detector opens, and a private jax
# module that may move between releases is imported guardedly.
DEFERRED = {"edn_jax.main": {"edn_jax.pose.pipeline", "edn_jax.build", "edn_jax.dataset", "edn_jax.train",
                             "edn_jax.transfer", "edn_jax.evaluate", "edn_jax.ablation", "edn_jax.distributed",
                             "edn_jax.report", "edn_jax.dance"},
            "edn_jax.pose.detector": {"mediapipe"},
            "edn_jax.storage": {"tensorflow"},  # only when a URL is used: local pose runs never import TF
            "edn_jax.distributed": {"jax._src"}}
TRAINING = {"edn_jax.train", "edn_jax.generator_stage", "edn_jax.face_stage", "edn_jax.ablation"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(modules imported at the top level, modules imported inside functions or classes) by one file."""
    top, nested = set(), set()
    tree = ast.parse(path.read_text())

    def names(node) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names}
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from edn_jax import video" names a module; "from edn_jax.video import x" the module itself.
            found = {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
            return found or {node.module}
        return set()

    for node in tree.body:
        top |= names(node)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for inner in ast.walk(node):
                nested |= names(inner)
    for node in tree.body:  # "try: import x" at the top level counts as the top
        if isinstance(node, ast.Try):
            for inner in ast.walk(node):
                top |= names(inner)
    return top, nested


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def internal(targets: set[str]) -> set[str]:
    """The edn_jax modules among imported names (a package's import is its __init__)."""
    return {t for t in targets if t in MODULES}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``edges`` closes, each as the path that closes it."""
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_there_is_no_import_cycle_in_the_package():
    cycles = find_cycles({name: internal(top | nested) for name, (top, nested) in GRAPH.items()})
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle():
    """A made-up graph with a cycle (as a function-level import would hide one), and one without."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    # The edges are real: train imports the evaluator, the face stage the generator stage.
    assert "edn_jax.evaluate" in internal(GRAPH["edn_jax.train"][0])
    assert "edn_jax.generator_stage" in internal(GRAPH["edn_jax.face_stage"][0])


def test_imports_are_at_the_top_of_each_module():
    late = {name: sorted(nested - DEFERRED.get(name, set())) for name, (_, nested) in GRAPH.items()}
    late = {name: mods for name, mods in late.items() if mods}
    assert not late, f"imports inside functions: {late}"


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in internal(GRAPH[node][0] | GRAPH[node][1]):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_rendering_and_evaluation_never_reach_the_trainers():
    """Data flows one way: a finished model's renderer and evaluator depend on no training code."""
    for module in ("edn_jax.evaluate", "edn_jax.transfer", "edn_jax.inference", "edn_jax.checkpoints",
                   "edn_jax.sources"):
        assert not reachable(module) & TRAINING, (module, sorted(reachable(module) & TRAINING))


def test_no_module_outgrows_one_concern():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= MAX_LINES, {k: v for k, v in sizes.items() if v > MAX_LINES}
