"""The text of the files `lowbuild init` writes: `lowbuild.yaml` and one `image.yaml` per
image directory. Values are written as JSON scalars (valid YAML, quoted where needed);
what a person must confirm is written as comments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lowbuild.adopt.infer import Adoption, ImagePlan

HEADER = "# Written by `lowbuild init` from the tree's Dockerfiles and build scripts.\n"


def _q(value: str) -> str:
    return json.dumps(value)


def _list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def project_text(adoption: Adoption, pins: Mapping[str, str]) -> str:
    """lowbuild.yaml: the project, its context directories, and the external bases with
    the image ID the local engine has for each (`pins`)."""
    lines = [
        HEADER.rstrip("\n"),
        f"name: {_q(adoption.name)}",
        f"contexts: {_list([plan.relative for plan in adoption.images])}",
    ]
    pinned = [(ref, pins[ref]) for ref in sorted(adoption.bases) if ref in pins]
    unpinned = [ref for ref in sorted(adoption.bases) if ref not in pins]
    if pinned:
        lines.append("# The external bases, pinned to the image the local engine has:")
        lines.append("bases:")
        lines += [f"  - {{ref: {_q(ref)}, id: {_q(image_id)}}}" for ref, image_id in pinned]
    for ref in unpinned:
        lines.append(f"# external base {ref}: not in the local engine's store, so not pinned")
    return "\n".join(lines) + "\n"


def image_text(plan: ImagePlan, *, tests: bool = False) -> str:
    """image.yaml of one directory. `tests`: write the suggested smoke test for real
    instead of as a comment."""
    source = plan.source
    scripts = ", ".join(script.path.name for script in source.scripts) or "no build script"
    lines = [
        HEADER.rstrip("\n"),
        f"# From {source.relative}/ ({scripts}).",
        f"name: {_q(plan.name)}",
    ]
    if plan.parent:
        final = source.images.final_base
        lines.append(f"parent: {_q(plan.parent)}  # FROM {final.ref if final else '?'}")
    if plan.tags:
        lines.append(f"tags: {_list(plan.tags)}")
    if plan.refs:
        lines.append("# The names its build script gave it; FROM lines elsewhere may use them.")
        lines.append(f"refs: {_list(plan.refs)}")
    if plan.artifacts:
        lines.append("artifacts:")
        for artifact in plan.artifacts:
            lines.append(f"  - file: {_q(artifact.file)}")
            lines.append(f"    sha256: {_q(artifact.sha256)}")
            lines.append(f"    size: {artifact.size}")
            if artifact.urls:
                lines.append(f"    urls: {_list(artifact.urls)}")
            else:
                lines.append("    urls: []  # cache-only: no URL found in the tree")
    for suggestion in plan.pack_suggestions:
        lines.append(f"# Suggested: {suggestion}")
    if plan.test_port is not None:
        test = f'test: {{http: {{port: {plan.test_port}, path: "/"}}}}'
        if tests:
            lines.append(f"{test}  # from EXPOSE {plan.test_port}")
        else:
            lines.append(f"# Suggested from EXPOSE {plan.test_port} (confirm, or init --tests):")
            lines.append(f"# {test}")
    return "\n".join(lines) + "\n"
