"""Imports point one way: a module imports only from its own package or from lower layers.

The table below is the one statement of the allowed direction (docs/ARCHITECTURE.md draws it).
Every `import firmware...` in every module is read with `ast` (imports inside functions count
too), so an import that runs up a layer, sideways between two leaves, or around a cycle fails.
`KNOWN_DEBT` lists the edges the core redesign has not removed yet; an entry that is no longer
needed fails the test too, so the list can only shrink.
"""

from __future__ import annotations

import ast
import functools
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "firmware"

# Lower numbers are lower layers. A module belongs to the longest prefix listed here.
LAYERS: dict[str, int] = {
    "firmware": 0,  # firmware/__init__.py: the version only
    "firmware.errors": 0,
    "firmware.text": 0,
    # Leaves: know nothing of each other.
    "firmware.config": 1,
    "firmware.flash": 1,
    "firmware.security": 1,
    # firmware/pop3's protocol library (h11-style, both roles; docs/pop3-library.md).
    "firmware.pop3.events": 1,
    "firmware.pop3.states": 1,
    "firmware.pop3.syntax": 1,
    "firmware.pop3.body": 1,
    "firmware.pop3.wire_errors": 1,
    "firmware.pop3.connection": 1,
    # The client report card's grader: sans-IO over the library's events (docs/report-card.md).
    "firmware.pop3.report": 1,
    # The mail store on flash.
    "firmware.store": 2,
    # Fault injection's sans-IO core (spec, plan, fault log): beside the store, under the
    # services that ask it (docs/faults.md).
    "firmware.faults": 2,
    # Services on the store.
    "firmware.scanner": 3,
    "firmware.pop3": 3,
    "firmware.ifax": 3,  # the Internet Fax poller: the POP3 library's client role + the store
    # The running device, its operations, its front-ends, the command line.
    "firmware.device": 4,
    "firmware.ops": 5,
    "firmware.console": 6,
    "firmware.http": 6,
    "firmware.fleet": 6,  # many Devices in one process; front-ends come from firmware.cli
    "firmware.cli": 7,
    "firmware.__main__": 8,
    "firmware.pop3.__main__": 8,  # `python -m firmware.pop3`: an entry point over the Device
}

# Edges allowed by the numbers but still wrong: the store takes a limits value, not a Profile.
FORBIDDEN: set[tuple[str, str]] = {("firmware.store", "firmware.config")}

# (importer's layer key, imported layer key) edges that the redesign still has to remove.
KNOWN_DEBT: set[tuple[str, str]] = set()


def layer_key(module: str) -> str:
    """The LAYERS key that `module` belongs to (the longest matching prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def package_of(key: str) -> str:
    """Modules of one package may import each other: `firmware.pop3.events` -> firmware.pop3."""
    parts = key.split(".")
    return ".".join(parts[:2])


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every firmware module `path` imports, resolved to absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("firmware"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("firmware"):
                continue
            # `from firmware.store import board` imports the module firmware.store.board;
            # `from firmware.store.board import Board` imports firmware.store.board.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists():
                    found.add(candidate)
                else:
                    found.add(target)
    return found


@functools.cache
def all_edges() -> set[tuple[str, str, str, str]]:
    """(importer module, imported module, importer key, imported key) for every import."""
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in imports_of(path):
            edges.add((here, target, layer_key(here), layer_key(target)))
    return edges


def judge(here: str, target: str) -> tuple[str, str] | None:
    """The (importer package, imported package) pair if `here` may not import `target`."""
    k_here, k_target = layer_key(here), layer_key(target)
    pair = (package_of(k_here), package_of(k_target))
    same_package = pair[0] == pair[1]
    # Upward (this also keeps the library half of firmware/pop3 from importing its service).
    upward = LAYERS[k_target] > LAYERS[k_here]
    sideways = LAYERS[k_target] == LAYERS[k_here] and not same_package
    return pair if upward or sideways or pair in FORBIDDEN else None


def violations() -> dict[tuple[str, str], list[str]]:
    bad: dict[tuple[str, str], list[str]] = {}
    for here, target, _k_here, _k_target in all_edges():
        pair = judge(here, target)
        if pair is not None:
            bad.setdefault(pair, []).append(f"{here} imports {target}")
    return bad


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_key(module_name(path))


def test_imports_point_down() -> None:
    bad = violations()
    new = {pair: lines for pair, lines in bad.items() if pair not in KNOWN_DEBT}
    assert not new, "imports against the layer table:\n" + "\n".join(
        line for lines in new.values() for line in sorted(lines)
    )


def test_known_debt_is_still_owed() -> None:
    """A debt entry that no module needs any more must be struck from KNOWN_DEBT."""
    paid = KNOWN_DEBT - set(violations())
    assert not paid, f"remove from KNOWN_DEBT, no longer imported: {sorted(paid)}"


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    # Nodes are the table's entries (an entry point such as firmware.pop3.__main__ is its own).
    for _here, _target, k_here, k_target in all_edges():
        if k_here != k_target:
            graph.setdefault(k_here, set()).add(k_target)
    debt_edges = {(a, b) for a, b in KNOWN_DEBT}
    seen: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> None:
        if node in stack:
            cycle = [*stack[stack.index(node) :], node]
            pairs = set(itertools.pairwise(cycle))
            if not pairs & debt_edges:
                pytest.fail("import cycle: " + " -> ".join(cycle))
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)


def test_the_rules_refuse_what_they_should() -> None:
    """The judge on made-up edges, so a table edit that lets everything through is caught."""
    assert judge("firmware.store.log", "firmware.console.shell") == (
        "firmware.store",
        "firmware.console",
    )
    assert judge("firmware.flash.image", "firmware.security.tls") is not None  # sideways
    assert judge("firmware.pop3.connection", "firmware.pop3.server") is not None  # lib -> app
    assert judge("firmware.store.board", "firmware.config.profile") is not None  # forbidden
    assert judge("firmware.cli.run", "firmware.device.device") is None
    assert judge("firmware.pop3.server", "firmware.pop3.connection") is None
    assert judge("firmware.scanner.job", "firmware.store.board") is None


def test_imports_are_read_from_source(tmp_path: Path) -> None:
    sample = PACKAGE / "store" / "board.py"
    found = imports_of(sample)
    assert "firmware.flash.image" in found
    assert "firmware.errors" in found
