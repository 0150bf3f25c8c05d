"""`lowbuild init`: write the family spec of a tree of hand-made image directories.

Reads the tree (adopt.tree), infers the family (adopt.infer), asks the local engine for
the external bases' IDs to pin (when one works), then writes `lowbuild.yaml` and each
`image.yaml` all or nothing: nothing is written when any file it would replace exists
and differs (unless `force`), and when lowbuild's own loader refuses what was written,
every file is put back as it was. Finally the pinned inputs lying in the tree are
admitted to the cache. Existing Dockerfiles, scripts and tarballs are never changed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from lowbuild.adopt.infer import Adoption, Finding, infer_family
from lowbuild.adopt.render import image_text, project_text
from lowbuild.adopt.tree import read_tree
from lowbuild.errors import LowbuildError, UsageError
from lowbuild.spec.load import PROJECT_FILE
from lowbuild.spec.model import IMAGE_FILE


@dataclass
class InitResult:
    adoption: Adoption
    files: dict[Path, str]  # path → the text written (or to write)
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)  # artifact files put in the cache
    findings: list[Finding] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, object]:
        root = self.adoption.root
        return {
            "root": str(root),
            "dry_run": self.dry_run,
            "project": str(root / PROJECT_FILE),
            "images": [
                {
                    "name": plan.name,
                    "directory": plan.relative,
                    "parent": plan.parent,
                    "tags": list(plan.tags),
                    "refs": list(plan.refs),
                    "artifacts": [
                        {"file": a.file, "sha256": a.sha256, "size": a.size, "urls": list(a.urls)}
                        for a in plan.artifacts
                    ],
                    "test_port": plan.test_port,
                }
                for plan in self.adoption.images
            ],
            "bases": dict(sorted(self.adoption.bases.items())),
            "written": [str(path.relative_to(root)) for path in self.written],
            "unchanged": [str(path.relative_to(root)) for path in self.unchanged],
            "admitted": self.admitted,
            "findings": [finding.to_json() for finding in self.findings],
        }


def _base_pins(
    adoption: Adoption, engine_name: str | None, findings: list[Finding]
) -> dict[str, str]:
    """The local engine's image ID of each external base it has (none without an engine)."""
    if not adoption.bases:
        return {}
    from lowbuild.engines.detect import select_engine

    try:
        engine = select_engine(engine_name)
        found = engine.inspect_images(sorted(adoption.bases))
    except LowbuildError as exc:
        findings.append(
            Finding("bases-not-pinned", f"no engine to ask for the external bases: {exc}")
        )
        return {}
    pins = {ref: info.id for ref, info in found.items() if info is not None}
    for ref in sorted(set(adoption.bases) - set(pins)):
        findings.append(
            Finding(
                "base-missing",
                f"{ref} is not in {engine.name}'s store: not pinned; bring it in before "
                "building (lowbuild never pulls)",
            )
        )
    return pins


def _write_all(files: dict[Path, str]) -> list[tuple[Path, bytes | None]]:
    """Write every file through a temp file and a rename; return what each held before
    (None: it did not exist), for `_restore`."""
    before: list[tuple[Path, bytes | None]] = []
    try:
        for path, text in files.items():
            before.append((path, path.read_bytes() if path.exists() else None))
            temporary = path.with_name(f".{path.name}.lowbuild-init-{os.getpid()}")
            temporary.write_text(text, encoding="utf-8")
            temporary.replace(path)
    except BaseException:
        _restore(before)
        raise
    return before


def _restore(before: list[tuple[Path, bytes | None]]) -> None:
    for path, content in reversed(before):
        with contextlib.suppress(OSError):
            path.with_name(f".{path.name}.lowbuild-init-{os.getpid()}").unlink(missing_ok=True)
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)


def init_family(
    root: Path,
    *,
    dry_run: bool = False,
    force: bool = False,
    tests: bool = False,
    engine_name: str | None = None,
    pins: bool = True,
    cache_dir: Path | None = None,
) -> InitResult:
    """Read the tree at `root` and write its family spec (see the module's doc)."""
    from lowbuild.plan.graph import build_graph
    from lowbuild.sources.cache import Cache, admit_declared, default_cache_root
    from lowbuild.spec.load import load_project

    root = root.resolve()
    adoption = infer_family(root, read_tree(root))
    findings = list(adoption.findings)
    pinned = _base_pins(adoption, engine_name, findings) if pins else {}
    files = {root / PROJECT_FILE: project_text(adoption, pinned)}
    for plan in adoption.images:
        files[plan.source.directory / IMAGE_FILE] = image_text(plan, tests=tests)
    result = InitResult(adoption, files, findings=findings, dry_run=dry_run)
    changed = {}
    for path, text in files.items():
        if path.exists() and path.read_text(encoding="utf-8", errors="replace") == text:
            result.unchanged.append(path)
        else:
            changed[path] = text
    clashes = [path for path in changed if path.exists()]
    if clashes and not force:
        raise UsageError(
            "nothing written: these files exist and differ from what init would write: "
            + ", ".join(str(path.relative_to(root)) for path in clashes)
            + " (--force replaces them; --dry-run shows what it would write)"
        )
    if dry_run:
        result.written = list(changed)
        return result
    before = _write_all(changed)
    try:
        project = load_project(root / PROJECT_FILE)
        build_graph(project)
    except LowbuildError:
        _restore(before)  # what init wrote must load: never leave a spec that does not
        raise
    result.written = list(changed)
    inputs = [(a.path, a.file) for plan in adoption.images for a in plan.artifacts]
    if inputs:
        cache = Cache(default_cache_root(cache_dir))
        artifacts = [artifact for image in project.images for artifact in image.artifacts]
        admitted = admit_declared(
            cache,
            [path for path, _ in inputs],
            artifacts=artifacts,
            project=str(root / PROJECT_FILE),
        )
        result.admitted = sorted({artifact.file for _, artifact in admitted})
    return result


def print_init(result: InitResult, *, out: Console, as_json: bool) -> None:
    if as_json:
        out.file.write(json.dumps(result.to_json(), indent=2) + "\n")
        return
    root = result.adoption.root
    verb = "would write" if result.dry_run else "wrote"
    for path in result.written:
        out.print(f"{verb} {escape(str(path.relative_to(root)))}", highlight=False)
        if result.dry_run:
            for line in result.files[path].splitlines():
                out.print(f"    {escape(line)}", highlight=False)
    for path in result.unchanged:
        out.print(f"unchanged {escape(str(path.relative_to(root)))}", highlight=False)
    for file in result.admitted:
        out.print(f"admitted {escape(file)} to the cache", highlight=False)
    if result.findings:
        count = len(result.findings)
        out.print(f"\n{count} finding{'' if count == 1 else 's'}:", highlight=False)
    for finding in result.findings:
        where = finding.file or ""
        if finding.file and finding.line:
            where += f":{finding.line}"
        prefix = f"{where}: " if where else ""
        out.print(f"  {escape(f'[{finding.kind}] {prefix}{finding.message}')}", highlight=False)
