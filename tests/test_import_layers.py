"""The package's layers: every import inside sodlib points down (or within its own package), never up.

Read from the source with ``ast`` (every ``import`` counts, also those inside functions), so an arrow that
only appears at run time is caught too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sodlib"

#: Layer of each top-level part of sodlib; a part may import only parts of a lower layer, and itself.
LAYERS: dict[str, int] = {
    "data": 0, "tables": 0, "checks": 0,
    "_C": 0,                     # the compiled kernels, loaded by ops
    "anchors": 1, "ops": 1, "pyramid_levels": 1,
    "stats": 2, "augment": 2,
    "models": 3, "viz": 3,       # viz draws what it is given: it imports neither eval nor engine
    "eval": 4,
    "engine": 5, "bench": 5,
    "integrations": 6,
    "cli": 7, "__init__": 7,
    "__main__": 8,
}


def part_of(module: str) -> str:
    """``"sodlib.stats.objects"`` -> ``"stats"``; ``"sodlib"`` -> ``"__init__"``."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    pieces = list(relative.parts)
    if pieces[-1] == "__init__" and len(pieces) > 1:
        pieces = pieces[:-1]
    return ".".join(pieces)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of every sodlib module that ``source`` (the text of ``module``) imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "sodlib"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "sodlib":
                found.append((node.lineno, target))
    return found


def upward_arrows(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that point to a higher layer, or sideways to another part of its layer."""
    own = part_of(module)
    arrows = []
    for line, target in imported_modules(source, module, is_package):
        other = part_of(target)
        if other == own:
            continue
        if other not in LAYERS:
            arrows.append(f"{module}:{line} imports {target}, which has no layer (add it to LAYERS)")
        elif LAYERS[other] >= LAYERS[own]:
            arrows.append(f"{module}:{line} imports {target} (layer {LAYERS[other]} from layer {LAYERS[own]})")
    return arrows


def sodlib_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(module_name(path)) for path in sodlib_modules()}
    assert parts <= set(LAYERS), sorted(parts - set(LAYERS))


def test_no_import_points_up():
    arrows = []
    for path in sodlib_modules():
        arrows += upward_arrows(path.read_text(), module_name(path), path.name == "__init__.py")
    assert arrows == [], "\n".join(arrows)


def test_viz_imports_neither_evaluation_nor_training():
    for path in sorted((PACKAGE / "viz").rglob("*.py")):
        for _, target in imported_modules(path.read_text(), module_name(path), path.name == "__init__.py"):
            assert part_of(target) not in ("eval", "engine"), f"{path.name} imports {target}"


@pytest.mark.parametrize("source, module, arrows", [
    ("from sodlib.engine.train import train", "sodlib.viz.detection", 1),         # up
    ("def f():\n    import sodlib.eval.coco_eval", "sodlib.data.coco", 1),      # up, inside a function
    ("from sodlib.augment import mask_box", "sodlib.stats.objects", 1),         # sideways
    ("from .objects import ObjectTable", "sodlib.stats.size_shares", 0),        # own package, relative
    ("from ..engine import train", "sodlib.viz.detection", 1),                  # up, relative
    ("from sodlib.data.sizes import SIZE_BINS", "sodlib.viz.boxes", 0),         # down
])
def test_the_check_itself_catches_upward_arrows(source, module, arrows):
    assert len(upward_arrows(source, module)) == arrows
