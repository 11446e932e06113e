"""helpers/ is layered: a module imports (at the top or inside a function) only from its own layer
or below, and no two modules import each other, directly or round a longer loop."""

import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
LAYERS = {
    1: ["config", "profiles", "cache", "losses", "validate"],
    2: ["logprobs", "data", "toy", "corpus", "rewards", "sft", "optimum"],
    3: ["world", "train", "evaluate", "pairs", "reward_model", "targets", "checks"],
    4: ["implicit", "runs", "rlhf", "viz"],
    5: ["build"],
}
LAYER_OF = {m: layer for layer, mods in LAYERS.items() for m in mods}


def imports_of(module: str) -> set[str]:
    path = HELPERS / f"{module}.py"
    paths = [path] if path.exists() else sorted((HELPERS / module).glob("*.py"))  # a package: all its files
    found = set()
    nodes = [n for p in paths for n in ast.walk(ast.parse(p.read_text()))]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "helpers":
                found |= {a.name for a in node.names}
            elif node.module.startswith("helpers."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("helpers.")}
    return found - {module}


def test_every_module_has_a_layer():
    modules = {p.stem for p in HELPERS.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in HELPERS.iterdir() if (p / "__init__.py").exists()}
    assert modules == set(LAYER_OF), f"unlayered: {modules - set(LAYER_OF)}, gone: {set(LAYER_OF) - modules}"


def test_imports_go_to_the_same_layer_or_below():
    wrong = [f"{m} (layer {LAYER_OF[m]}) imports {d} (layer {LAYER_OF[d]})"
             for m in LAYER_OF for d in imports_of(m) if LAYER_OF[d] > LAYER_OF[m]]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in LAYER_OF}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [])
