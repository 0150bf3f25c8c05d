"""What containers an engine has, asked of its CLI directly: lowbuild itself only ever
lists the containers of its own runs (Engine.run_containers)."""

from __future__ import annotations

import subprocess

from lowbuild.engines.base import Engine


def containers(engine: Engine, *, label: str | None = None) -> set[str]:
    """Full IDs of the engine's containers in any state, optionally only those carrying
    `label` (key or key=value). buildah's containers for running are podman's."""
    binary = "docker" if engine.name in {"docker", "buildx"} else "podman"
    argv = [binary, "ps", "--all", "--quiet", "--no-trunc"]
    if label:
        argv += ["--filter", f"label={label}"]
    listed = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    return set(listed.stdout.split())
