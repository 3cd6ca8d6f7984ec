"""docs/architecture.md is true: every module has its row, and no module imports upwards."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
FOLDERS = {"ser_stream": "ser_stream", "stages": "ser_stream.stages",
           "train": "ser_stream.train", "models": "ser_stream.models"}  # fmt: skip
ROW = re.compile(r"^\| `([^`]+)` \| (\d) \|", re.MULTILINE)


def layers() -> dict[str, int]:
    return {path: int(layer) for path, layer in ROW.findall(DOC.read_text())}


def modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name, with its source file."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def layer_of(path: Path, table: dict[str, int]) -> int | None:
    rel = path.relative_to(ROOT).as_posix()
    if rel in table:
        return table[rel]
    folders = [f for f in table if f.endswith("/") and rel.startswith(f)]
    return table[max(folders, key=len)] if folders else None


def load_time_imports(source: str) -> set[str]:
    """The ser_stream modules ``source`` imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ser_stream"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("ser_stream")}
    return names


def test_every_module_has_its_row():
    table = layers()
    missing = [str(p.relative_to(ROOT)) for p in modules().values() if layer_of(p, table) is None]
    assert missing == [], f"add these to docs/architecture.md: {missing}"


def test_every_row_names_something_that_exists():
    assert [path for path in layers() if not (ROOT / path).exists()] == []


def upward_imports(found: dict[str, Path], table: dict[str, int], read=Path.read_text) -> list[str]:
    """Every load-time import of a module from a higher layer than its own."""
    upwards = []
    for name, path in found.items():
        mine = layer_of(path, table)
        for imported in load_time_imports(read(path)):
            target = found.get(imported)
            if target is None:  # `from ser_stream.x import y` where y is a function
                continue
            theirs = layer_of(target, table)
            if mine is not None and theirs is not None and theirs > mine:
                upwards.append(f"{name} (layer {mine}) imports {imported} (layer {theirs})")
    return upwards


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(modules(), layers()) == []


def test_the_rule_catches_an_upward_import():
    """A foundation module that imported the supervisor would be reported."""
    found, table = modules(), layers()
    planted = ROOT / "ser_stream" / "wire.py"
    source = "from ser_stream.supervisor.pipeline import run_pipeline\n"
    upwards = upward_imports(
        found, table, read=lambda path: source if path == planted else path.read_text()
    )
    assert upwards == ["ser_stream.wire (layer 1) imports ser_stream.supervisor.pipeline (layer 6)"]
