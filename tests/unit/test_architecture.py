"""The shape of ``service/``: parts in layers, imports one way, no cycles.

The layer table below is the architecture; the README's "How it is built" shows the same
table (checked here too). A part may import a part of a lower layer, never one of its
own layer or above, and only through that part's ``__init__`` (its public face). Inside
a part, modules import each other by module path. No import cycle between modules,
counting imports under ``TYPE_CHECKING`` and inside functions too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "service"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__",),
    ("cli",),
    ("app",),
    ("chat", "watch", "homeassistant"),
    ("tools",),
    ("frigate", "frames", "llm"),
    ("mqtt",),
    ("store",),
    ("settings", "log"),
)
"""Top to bottom. Parts on one line are independent of each other."""


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module or package, dotted
    line: int


def layer_of(part: str) -> int:
    for index, parts in enumerate(LAYERS):
        if part in parts:
            return index
    raise AssertionError(
        f"service/{part} is in no layer: add it to LAYERS in {Path(__file__).name} "
        "and to the README's 'How it is built'"
    )


def module_name(path: Path, root: Path = SERVICE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(dotted: str, root: Path = SERVICE) -> bool:
    return (root.parent / dotted.replace(".", "/") / "__init__.py").exists()


def is_module(dotted: str, root: Path = SERVICE) -> bool:
    return is_package(dotted, root) or (root.parent / (dotted.replace(".", "/") + ".py")).exists()


def bound_names(package: str, root: Path = SERVICE) -> set[str]:
    """Names a package's ``__init__`` binds at top level."""
    init = root.parent / package.replace(".", "/") / "__init__.py"
    if not init.exists():
        return set()
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def part_of(dotted: str) -> str | None:
    """``service.watch.machine`` -> ``watch``; ``service`` itself -> None."""
    levels = dotted.split(".")
    return levels[1] if len(levels) > 1 else None


def imports(path: Path, root: Path = SERVICE) -> Iterator[Edge]:
    """Every import of a ``service`` module in a file, wherever it sits in the file."""
    source = module_name(path, root)
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name:
                    yield Edge(source, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != root.name:
                continue
            for alias in node.names:
                # `from service.cli import grab` names a module unless the package
                # binds that name itself (as `service.cli` binds `main`).
                candidate = f"{node.module}.{alias.name}"
                submodule = is_module(candidate, root) and alias.name not in bound_names(
                    node.module, root
                )
                yield Edge(source, candidate if submodule else node.module, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use service.…")


def all_edges(root: Path = SERVICE) -> list[Edge]:
    return [edge for path in sorted(root.rglob("*.py")) for edge in imports(path, root)]


def violations(edges: list[Edge]) -> list[str]:
    """Imports that break the layer, public-face or inside-a-part rules."""
    found: list[str] = []
    for edge in edges:
        src, dst = part_of(edge.source), part_of(edge.target)
        where = f"{edge.source}:{edge.line} imports {edge.target}"
        if dst is None or src is None:
            continue  # `service` itself holds only the version
        if src == dst:
            if edge.target == f"service.{src}" and edge.source != edge.target:
                found.append(f"{where}: inside a part, import the module, not the part's __init__")
            continue
        if layer_of(dst) <= layer_of(src):
            found.append(f"{where}: {src} may not depend on {dst} (same layer or above)")
        if edge.target != f"service.{dst}":
            found.append(f"{where}: import from service.{dst}, its public face")
    return found


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_part_has_a_layer_and_a_docstring() -> None:
    for child in sorted(SERVICE.iterdir()):
        if child.name.startswith(("_", ".")) and child.name != "__main__.py":
            continue
        if child.is_dir() and (child / "__init__.py").exists():
            layer_of(child.name)
            doc = ast.get_docstring(ast.parse((child / "__init__.py").read_text()))
            assert doc, f"service/{child.name}/__init__.py needs a docstring saying what it is for"
        elif child.suffix == ".py":
            layer_of(child.stem)


def test_imports_run_one_way_through_public_faces() -> None:
    found = violations(all_edges())
    assert not found, "\n".join(found)


def test_no_import_cycle() -> None:
    found = cycles(all_edges())
    assert not found, "\n".join(" -> ".join(group) for group in found)


def test_home_assistant_integration_stands_alone() -> None:
    """The integration runs inside Home Assistant, where ``service`` is not installed."""
    found = []
    for path in (REPO / "custom_components").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            found += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n.split(".")[0] in {"service", "tests"}
            ]
    assert found == []


def test_parts_stay_small() -> None:
    """A module past ~400 lines is due for a split (the guide's rule of thumb)."""
    long = {
        str(p.relative_to(REPO)): n
        for p in SERVICE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert long == {}


def test_readme_shows_the_layers() -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```text\n# layers.*?\n(.*?)```", readme, re.S)
    assert block, "README's 'How it is built' needs the ```text # layers block"
    shown = [
        tuple(part.strip() for part in line.split("→")[0].split("|"))
        for line in block.group(1).splitlines()
        if line.strip()
    ]
    assert shown == [layer for layer in LAYERS if layer != ("__main__",)]


# -- the checker itself must catch what it is for -----------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "service"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a lower part importing a higher one
            {
                "store/__init__.py": '"""S."""\nfrom service.chat import x\n',
                "chat/__init__.py": '"""C."""\nx = 1\n',
            },
            "store may not depend on chat",
        ),
        (  # two parts of one layer
            {
                "chat/__init__.py": '"""C."""\nfrom service.watch import y\n',
                "watch/__init__.py": '"""W."""\ny = 1\n',
            },
            "chat may not depend on watch",
        ),
        (  # past the public face
            {
                "chat/__init__.py": '"""C."""\nfrom service.tools.registry import z\n',
                "tools/__init__.py": '"""T."""\n',
                "tools/registry.py": "z = 1\n",
            },
            "its public face",
        ),
        (  # a part's module through its own __init__
            {
                "tools/__init__.py": '"""T."""\nfrom service.tools.registry import z\n',
                "tools/registry.py": "from service.tools import z\n",
            },
            "inside a part",
        ),
    ],
)
def test_checker_catches_forbidden_imports(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    root = _tree(tmp_path, files)
    found = violations(all_edges(root))
    assert any(expected in v for v in found), found


def test_checker_catches_a_cycle_under_type_checking(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "llm/__init__.py": '"""L."""\n',
            "llm/a.py": "from service.llm.b import f\n",
            "llm/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from service.llm.a import g\n"
            ),
        },
    )
    assert cycles(all_edges(root)) == [["service.llm.a", "service.llm.b"]]
