"""Every third-party package the firmware imports is a runtime dependency in pyproject.toml.

Found by a fresh clone: `dpfw status IMG` on a running device failed with a traceback
(ModuleNotFoundError: httpx) because httpx was only in the test extra, which the test venv
has and `./tools/emulator`'s venv does not. This reads every import in firmware/ (top level
and inside functions) and maps it to the distribution that provides it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    return {
        _normal(re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]
    }


def _imported_top_level_names() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "firmware").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), str(path))
        typing_only = {  # imports under `if TYPE_CHECKING:` never run
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    runtime = _runtime_distributions()
    providers = packages_distributions()
    missing = []
    for top, files in sorted(_imported_top_level_names().items()):
        if top in sys.stdlib_module_names or top == "firmware" or top == "__future__":
            continue
        dists = {_normal(d) for d in providers.get(top, [])}
        assert dists, f"{top} (imported by {sorted(files)}) is not installed at all"
        if not dists & runtime:
            missing.append(f"{top} ({', '.join(sorted(dists))}) imported by {sorted(files)}")
    assert not missing, "imports not in [project] dependencies:\n" + "\n".join(missing)
