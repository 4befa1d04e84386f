"""The test suite's own layout: tests/ and each folder of test modules is a package, so pytest
names a test module by its place (``tests.unit.test_x``; two files may share a name in
different folders), and what tests share lives in tests/support/, never in another test
module (a test module imported by another would be collected twice, or drag its tests and
autouse fixtures along)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_every_test_folder_is_a_package_and_no_test_module_imports_another():
    modules = sorted(p for p in TESTS.rglob("*.py") if "fixtures" not in p.parts)
    folders = {p.parent for p in modules}
    assert [str(f) for f in sorted(folders) if not (f / "__init__.py").is_file()] == []
    imports: list[str] = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            imports += [
                f"{path.relative_to(TESTS)}: {name}"
                for name in names
                if name.rpartition(".")[2].startswith("test_")
            ]
    assert imports == []
