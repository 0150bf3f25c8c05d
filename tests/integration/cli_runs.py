"""What the integration tests share to drive lowbuild as a user does and to clean up
after it: the command run in a project directory, and the images left under a test's
own namespace removed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_lowbuild(
    root: Path, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`lowbuild ARGS` in `root` (the project directory), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "lowbuild", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def remove_namespace_images(client: str, namespace: str) -> None:
    """Remove every image whose reference names `namespace`, with `client` (podman or
    docker), whatever state a test left them in."""
    listed = subprocess.run(
        [client, "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    ours = [ref for ref in listed if namespace in ref]
    if ours:
        subprocess.run([client, "rmi", "-f", *ours], capture_output=True, check=False)
