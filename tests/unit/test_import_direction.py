"""No module of lowbuild imports from a later stage of the pipeline.

The stages, earliest first: errors/redact < spec < sources < context < engines < doctor
< plan < adopt < export < run < cli. A module may import from its own stage or an earlier one.
Imports inside functions and under TYPE_CHECKING count too: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lowbuild

PACKAGE = Path(lowbuild.__file__).parent
ORDER = (
    "errors",
    "spec",
    "sources",
    "context",
    "engines",
    "doctor",
    "plan",
    "adopt",
    "export",
    "run",
    "cli",
)
STAGE_OF_TOP = {
    "errors": "errors",
    "redact": "errors",
    "__main__": "cli",
    "entry": "cli",
    "__init__": "errors",
}

# Backward imports allowed for a reason written beside each: (importing, imported).
# The test fails on an entry that no longer occurs, so this list cannot go stale.
KNOWN: frozenset[tuple[str, str]] = frozenset()


def stage(module: str) -> str:
    """The pipeline stage of a dotted module name under lowbuild."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return STAGE_OF_TOP.get(top, top)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported lowbuild module) for every import in `source`, at any depth."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("lowbuild")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "lowbuild":
                # `from lowbuild import spec` imports the subpackage itself
                found += [(node.lineno, f"lowbuild.{a.name}") for a in node.names]
            elif target.startswith("lowbuild."):
                found.append((node.lineno, target))
    return found


def backward_imports(
    files: dict[str, tuple[str, bool]],
) -> list[tuple[str, int, str, str]]:
    """(module, line, imported, message) for each import from a later stage."""
    bad = []
    for module, (source, is_package) in sorted(files.items()):
        mine = ORDER.index(stage(module))
        for line, target in imports_of(source, module, is_package):
            theirs = stage(target)
            if theirs in ORDER and ORDER.index(theirs) > mine:
                bad.append((module, line, target, f"{stage(module)} imports {theirs}"))
    return bad


def package_files() -> dict[str, tuple[str, bool]]:
    return {
        module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in PACKAGE.rglob("*.py")
    }


def test_every_module_belongs_to_a_known_stage() -> None:
    unknown = {m for m in package_files() if stage(m) not in ORDER}
    assert not unknown, f"add these to ORDER or STAGE_OF_TOP: {sorted(unknown)}"


def test_no_module_imports_from_a_later_stage() -> None:
    found = backward_imports(package_files())
    new = [
        f"{m.replace('.', '/')}.py:{line}: {why} ({target})"
        for m, line, target, why in found
        if (m, target) not in KNOWN
    ]
    assert not new, "backward imports:\n" + "\n".join(new)
    gone = KNOWN - {(m, target) for m, _, target, _ in found}
    assert not gone, f"fixed, remove from KNOWN: {sorted(gone)}"


def test_the_check_catches_a_backward_import_at_any_depth() -> None:
    files = {
        "lowbuild.spec.model": ("import os\n", False),
        "lowbuild.spec.bad": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from lowbuild.run.report import x\n"
            "def f():\n"
            "    from ..plan import graph\n",
            False,
        ),
        "lowbuild.run.ok": ("from lowbuild.spec.model import y\nimport lowbuild.errors\n", False),
    }
    found = {(m, line, t) for m, line, t, _ in backward_imports(files)}
    assert found == {
        ("lowbuild.spec.bad", 3, "lowbuild.run.report"),
        ("lowbuild.spec.bad", 5, "lowbuild.plan"),
    }
