"""The house: edgeft's modules stand on floors, and a module imports only from its own floor or below.

ground    errors, contract, artifact, metrics, parity, decision, redact, progress, images, host, the task registry
runtime   runners, Predictor, sources, infer, metrics endpoint: what the camera runs
training  models, data, the one training loop
stages    finetune, prune, export, quantize, tensorrt (build): side by side, never importing each other
measure   evaluate, bench
tasks     one object per task (edgeft/tasks/<name>), composing its pieces from the floors below
top       optimize, cli, doctor

A task's pieces live in its folder and stand on the floor of what they do (``PIECES``): the anomaly graph and
heatmap on the runtime floor, its feature statistics with training, its fit, pruning and INT8 refit beside the stages
(its pruning counts as part of prune, its refit as part of quantize), its gallery with the report. Lower floors reach
a task only through ``edgeft.tasks.registry`` (by name, the plug-in seam).

Imports are read from the source (top-level and inside functions alike), so a lazy import that climbs a floor
is caught too; the few allowed ones are listed with their reason. This table is the one floor map: the README's
layout section is checked against it (``test_the_readme_floor_map_is_this_one``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeft"

FLOORS = [
    ("ground", ["edgeft", "edgeft.__init__", "edgeft.errors", "edgeft.contract", "edgeft.artifact", "edgeft.metrics",
                "edgeft.parity", "edgeft.decision", "edgeft.settings", "edgeft.redact", "edgeft.progress",
                "edgeft.images", "edgeft.host", "edgeft.svg", "edgeft.tasks.registry"]),
    ("runtime", ["edgeft.runtime", "edgeft.station"]),
    ("training", ["edgeft.models", "edgeft.data", "edgeft.training"]),
    ("stages", ["edgeft.importer", "edgeft.finetune", "edgeft.prune", "edgeft.export", "edgeft.quantize",
                "edgeft.tensorrt"]),
    ("measure", ["edgeft.evaluate", "edgeft.bench", "edgeft.history"]),
    ("tasks", ["edgeft.tasks"]),
    ("top", ["edgeft.optimize", "edgeft.promote", "edgeft.cli", "edgeft.doctor", "edgeft.__main__"]),
]
# a task's pieces: module -> (floor, the package it stands with); stages of one task may import each other only
# through the stage they belong to
PIECES: dict[str, tuple[str, str]] = {
    "edgeft.tasks.anomaly.graph": ("runtime", "edgeft.runtime"),
    "edgeft.tasks.anomaly.heatmap": ("runtime", "edgeft.runtime"),
    "edgeft.tasks.anomaly.config": ("training", "edgeft.training"),
    "edgeft.tasks.anomaly.features": ("training", "edgeft.training"),
    "edgeft.tasks.anomaly.scoring": ("training", "edgeft.training"),
    "edgeft.tasks.anomaly.fit": ("stages", "edgeft.tasks.anomaly.fit"),
    "edgeft.tasks.anomaly.prune": ("stages", "edgeft.prune"),
    "edgeft.tasks.anomaly.quantize": ("stages", "edgeft.quantize"),
    "edgeft.tasks.detect.model": ("runtime", "edgeft.runtime"),
    "edgeft.tasks.detect.nms": ("runtime", "edgeft.runtime"),
    "edgeft.tasks.detect.boxes": ("runtime", "edgeft.runtime"),
    "edgeft.tasks.detect.data": ("training", "edgeft.training"),
    "edgeft.tasks.detect.metrics": ("training", "edgeft.training"),
    "edgeft.tasks.detect.config": ("training", "edgeft.training"),
    "edgeft.tasks.detect.training": ("training", "edgeft.training"),
    "edgeft.tasks.detect.train": ("stages", "edgeft.tasks.detect.train"),
    "edgeft.tasks.detect.prune": ("stages", "edgeft.prune"),
    "edgeft.tasks.detect.qat": ("stages", "edgeft.quantize"),
    "edgeft.tasks.detect.checkpoint": ("stages", "edgeft.importer"),
}
FLOOR_NAMES = [name for name, _ in FLOORS]
STAGE_FLOOR = FLOOR_NAMES.index("stages")
# (importer, imported): lazy imports that climb a floor, each for a reason
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def floor(module: str) -> tuple[int, str]:
    """(floor number, the package or module that places it there)."""
    if module in PIECES:
        name, group = PIECES[module]
        return FLOOR_NAMES.index(name), group
    best = (-1, "", "")
    for i, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[2]):
                best = (i, prefix, prefix)
    assert best[0] >= 0, f"{module} stands on no floor: add it to FLOORS"
    return best[0], best[1]


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported edgeft module, lazy) for every import statement in ``path``."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[tuple[str, bool]] = []

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((resolve(a.name), inside) for a in child.names if a.name.startswith("edgeft"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("edgeft"):
                    found.extend((resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in known else resolve(base), inside)
                                 for a in child.names)
            visit(child, inside)

    visit(tree, False)
    return [(m, lazy) for m, lazy in found if m != module]


def graph() -> dict[str, list[tuple[str, bool]]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_no_module_imports_a_higher_floor():
    wrong = []
    for module, deps in graph().items():
        mine, _ = floor(module)
        for dep, lazy in deps:
            theirs, _ = floor(dep)
            if theirs > mine and (module, dep) not in ALLOWED_UPWARD:
                wrong.append(f"{module} ({FLOORS[mine][0]}) imports {dep} ({FLOORS[theirs][0]})"
                             + (" lazily" if lazy else ""))
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_stages_never_import_each_other():
    wrong = []
    for module, deps in graph().items():
        if floor(module)[0] != STAGE_FLOOR:
            continue
        for dep, _ in deps:
            if floor(dep)[0] == STAGE_FLOOR and floor(dep)[1] != floor(module)[1]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_circles():
    g = {m: sorted({d for d, _ in deps}) for m, deps in graph().items()}
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[str] = []

    def walk(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in g.get(node, []):
            if seen.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in seen:
                walk(dep, path + [dep])
        seen[node] = 2

    for m in sorted(g):
        if m not in seen:
            walk(m, [m])
    # a package's __init__ re-exporting its own submodules is not a circle between floors
    cycles = [c for c in cycles if len({floor(x)[1] for x in c.split(" -> ")}) > 1
              or not any(x == floor(x)[1] for x in c.split(" -> "))]
    assert not cycles, "\n".join(cycles)


def test_the_layout_test_sees_a_violation(tmp_path, monkeypatch):
    """The checks above can fail: a runtime module that imports a stage is reported."""
    known = modules()
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from edgeft.prune import pruner\n")
    found = imports("edgeft.runtime.bad", bad, {**known, "edgeft.runtime.bad": bad})
    assert found == [("edgeft.prune.pruner", True)]
    assert floor("edgeft.prune.pruner")[0] > floor("edgeft.runtime.bad")[0]


def test_stage_functions_stay_short():
    """A stage reads as its steps: no function in the stages (or the training floor) over 80 lines."""
    long = []
    for module, path in modules().items():
        if floor(module)[0] != 3 and not module.startswith("edgeft.training"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, "\n".join(long)


def test_the_training_loop_exists_once():
    """Fine-tuning, pruning recovery, QAT and the feature distillation of a pruned anomaly backbone train through
    edgeft.training.loop; nothing else steps an optimizer."""
    steppers = sorted(m for m, p in modules().items() if ".step()" in p.read_text() and "optim" in p.read_text())
    assert steppers == ["edgeft.training.loop"], steppers


def _readme_floors() -> dict[str, list[str]]:
    """The README's floor map (its ```floors block): floor name -> the modules and packages named on it (words in
    parentheses are descriptions, not modules)."""
    import re

    text = (PACKAGE.parent / "README.md").read_text()
    block = re.search(r"```floors\n(.*?)```", text, re.S)
    assert block, "README.md has no ```floors block"
    floors: dict[str, list[str]] = {}
    current = ""
    for line in block.group(1).splitlines():
        if line and not line[0].isspace():
            current, line = line.split(None, 1)[0], line.split(None, 1)[1] if " " in line.strip() else ""
            floors[current] = []
        line = re.sub(r"\([^)]*\)", "", line)
        for word in re.findall(r"[a-z_]+(?:/[a-z_]+)*(?:\.py|/)?", line):
            floors[current].append("edgeft." + word.removesuffix(".py").rstrip("/").replace("/", "."))
    return floors


def test_the_readme_floor_map_is_this_one():
    """One floor map: the README's names the floors in this order, places every module it names where FLOORS (and
    PIECES) place it, and names every top-level package and every task piece."""
    floors = _readme_floors()
    known = modules()
    assert list(floors) == FLOOR_NAMES
    wrong = []
    for name, words in floors.items():
        for module in (w for w in words if w in known):
            if FLOOR_NAMES[floor(module)[0]] != name:
                wrong.append(f"README puts {module} on {name}; FLOORS put it on {FLOOR_NAMES[floor(module)[0]]}")
    named = {w for words in floors.values() for w in words}
    top_level = {".".join(m.split(".")[:2]) for m in known if m.count(".") >= 1} - {"edgeft.__main__"}
    missing = sorted((top_level | set(PIECES)) - named - {"edgeft.tasks"})
    assert not wrong and not missing, "\n".join(wrong + [f"README's floor map does not name {m}" for m in missing])
