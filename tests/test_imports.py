"""The package's shape: imports flow one way, down the pipeline's layers (no cycles; evaluation
and rendering never reach the trainers), imports sit at the top of each module, and no module or
function outgrows one concern."""

import ast
import pathlib

from helpers import REPO

PACKAGE = REPO / "edn_jax"
MAX_LINES = 500           # a module
MAX_FUNCTION_LINES = 80   # a function or method, its docstring included
# The layers, lowest first: a module imports only from its own layer and the ones below. A module
# belongs to the layer of the longest name it starts with. The keypoint layout sits in the base
# beside the errors, the workdir's file names and the stage plan: every layer indexes points
# through it, the synthetic subject included, which the pose stage reads as one of its sources.
LAYERS = (
    ("edn_jax", "edn_jax.errors", "edn_jax.filenames", "edn_jax.stages", "edn_jax.pose.layout"),
    ("edn_jax.runtime",),         # storage, files, video, progress, processes and sharding
    ("edn_jax.synthetic",),       # the built-in subject: a camera and a detector in one
    ("edn_jax.pose",),            # video -> keypoints
    ("edn_jax.data",),            # keypoints -> dataset -> batches
    ("edn_jax.conditioning",),    # plate, exemplar, face crop: what G sees beside the figure
    ("edn_jax.models",),          # the networks, their checks, checkpoints and the renderer
    ("edn_jax.evaluation",),      # held-out scores, self scores, the results page
    ("edn_jax.transfer",),        # a finished model renders source videos
    ("edn_jax.training",),        # the stage trainers and the loop (which evaluates)
    ("edn_jax.main", "edn_jax.command_line", "edn_jax.dance", "edn_jax.ablation"),  # the modes
)
# Function-level imports allowed: the CLI picks a mode's module when it runs (TensorFlow, TFDS and
# MediaPipe take seconds to import), MediaPipe loads only when a detector opens, and a private jax
# module that may move between releases is imported guardedly.
DEFERRED = {"edn_jax.main": {"edn_jax.pose.pipeline", "edn_jax.data.build", "edn_jax.data.dataset",
                             "edn_jax.training.train", "edn_jax.transfer.rendering", "edn_jax.evaluation.evaluate",
                             "edn_jax.ablation", "edn_jax.runtime.distributed", "edn_jax.evaluation.report",
                             "edn_jax.dance"},
            "edn_jax.pose.detector": {"mediapipe"},
            "edn_jax.runtime.storage": {"tensorflow"},  # only when a URL is used: local pose runs never import TF
            "edn_jax.runtime.distributed": {"jax._src"}}
TRAINING = {"edn_jax.training.train", "edn_jax.training.generator_stage", "edn_jax.training.face_stage",
            "edn_jax.ablation"}


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
            # "from edn_jax.runtime import video" names a module; "from edn_jax.runtime.video import x" the module.
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
    assert "edn_jax.evaluation.evaluate" in internal(GRAPH["edn_jax.training.train"][0])
    assert "edn_jax.training.generator_stage" in internal(GRAPH["edn_jax.training.face_stage"][0])


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
    for module in ("edn_jax.evaluation.evaluate", "edn_jax.transfer.rendering", "edn_jax.models.inference",
                   "edn_jax.models.checkpoints", "edn_jax.transfer.sources"):
        assert not reachable(module) & TRAINING, (module, sorted(reachable(module) & TRAINING))


def test_no_module_outgrows_one_concern():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= MAX_LINES, {k: v for k, v in sizes.items() if v > MAX_LINES}


def layer_of(module: str) -> int:
    """The index in ``LAYERS`` of the longest name ``module`` is or starts with (-1: none)."""
    best, found = "", -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, found = name, index
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module in a higher layer than the importer's, as "a -> b"."""
    return [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if layer_of(b) > layer_of(a)]


def test_every_module_has_a_layer():
    """Each module is placed: the base is only what ``LAYERS`` names (a new top-level module or
    subpackage must be given its layer)."""
    loose = [name for name in MODULES if layer_of(name) == 0 and name not in LAYERS[0]]
    assert not loose, f"modules outside every layer (add them to LAYERS): {loose}"


def test_imports_flow_down_the_layers():
    graph = {name: internal(top | nested) for name, (top, nested) in GRAPH.items()}
    assert not upward_imports(graph), "imports of a higher layer: " + "; ".join(upward_imports(graph))


def test_the_layer_check_finds_an_upward_import():
    """A made-up graph with one upward edge (a model importing a trainer), and the real edges it must allow."""
    assert upward_imports({"edn_jax.models.factory": {"edn_jax.training.losses", "edn_jax.runtime.storage"},
                           "edn_jax.pose.tracking": {"edn_jax.pose.layout"}}) == [
        "edn_jax.models.factory -> edn_jax.training.losses"]
    assert layer_of("edn_jax.pose.layout") == 0 and layer_of("edn_jax.pose.tracking") == 3
    assert layer_of("edn_jax.training.train") > layer_of("edn_jax.evaluation.evaluate")


def function_lengths(path: pathlib.Path) -> dict[str, int]:
    """Lines of each function and method in one file (its decorators left out, its docstring counted)."""
    tree = ast.parse(path.read_text())
    return {f"{path.relative_to(REPO)}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_no_function_outgrows_one_screen():
    lengths = {k: v for path in MODULES.values() for k, v in function_lengths(path).items()}
    long = {k: v for k, v in lengths.items() if v > MAX_FUNCTION_LINES}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"
