"""`providers/` is a library the gateway uses: it must never import `gateway`."""

from __future__ import annotations

import ast
from pathlib import Path

PROVIDERS = Path(__file__).resolve().parents[2] / "providers"


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_providers_never_import_gateway() -> None:
    sources = sorted(PROVIDERS.rglob("*.py"))
    assert len(sources) > 10
    offenders = {str(path.relative_to(PROVIDERS)): sorted(name for name in _imported_modules(path)
                                                         if name == "gateway" or name.startswith("gateway."))
                 for path in sources}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_guard_sees_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom gateway.settings import Settings\n")
    assert "gateway.settings" in _imported_modules(sample)
