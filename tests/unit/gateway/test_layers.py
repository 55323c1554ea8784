"""The gateway's rooms import downwards only, so there are no circles between them: `api` uses
`experiments`, `observability` and `serving`; `experiments` and `observability` use `serving`;
`serving` uses none of them. The modules at the top that every room may use (settings, errors,
logs and their helpers) import no room. Nothing in the gateway imports the pipelines, and of
the model only the names and the signature every part agrees on (it never loads the model)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[3] / "gateway"
# Each room, and the rooms it may import besides itself.
ROOMS = {
    "serving": set(),
    "experiments": {"serving"},
    "observability": {"serving"},
    "api": {"serving", "experiments", "observability"},
}
# Top-level modules any room may import; they import none of the rooms.
SHARED = {"settings", "errors", "logs", "jsonio", "redact"}
# The model's contract, light and shared; the model itself is the scoring server's business.
MODEL_CONTRACT = {"model.names", "model.signature"}


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, by absolute name (`from gateway import x` as gateway.x
    when x is a module of its own)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.append(name if is_module(name) else node.module)
    return found


def is_module(name: str) -> bool:
    where = GATEWAY.parent.joinpath(*name.split("."))
    return where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()


def modules() -> list[Path]:
    return sorted(GATEWAY.rglob("*.py"))


def room_of(path: Path) -> str | None:
    """The room a module is in (None: the top level)."""
    parts = path.relative_to(GATEWAY).parts
    return parts[0] if len(parts) > 1 else None


def target_room(name: str) -> str | None:
    """The room a gateway module is in (None: the top level)."""
    part = name.split(".")[1]
    return part if part in ROOMS else None


def test_the_rooms_are_the_ones_listed():
    assert {p.name for p in GATEWAY.iterdir() if (p / "__init__.py").is_file()} == set(ROOMS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_each_module_imports_only_what_its_room_may(path):
    room = room_of(path)
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in {"pipelines", "benchmarks", "stack", "tests"}, f"{path}: {name}"
        if top == "model":
            assert name in MODEL_CONTRACT, f"{path}: {name}"
        if top != "gateway" or name == "gateway":
            continue
        target = target_room(name)
        if room is None and path.stem in SHARED:
            assert target is None and name.split(".")[1] in SHARED, f"{path}: {name}"
        elif room is not None:
            if target is None:
                assert name.split(".")[1] in SHARED, f"{path}: {name} is not shared"
            else:
                assert target in ROOMS[room] | {room}, f"{path}: {room} may not import {name}"
