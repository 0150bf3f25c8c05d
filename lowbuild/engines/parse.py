"""Reading what the engines print: the parsers podman, buildah, docker and buildx share.

No engine command runs here: each parser is unit-tested on captured output.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lowbuild.engines.base import ImageInfo, normalise_image_id
from lowbuild.engines.commands import CommandOutput
from lowbuild.errors import EngineError


def says_image_missing(error: EngineError) -> bool:
    """Whether a failed command failed only because the image does not exist (docker:
    "No such image", podman/buildah: "image not known"); python-on-whales' own classifier."""
    from python_on_whales.exceptions import NoSuchImage  # lazy: see `WhalesEngine.client`
    from python_on_whales.utils import get_docker_exception_type

    return get_docker_exception_type(error.stderr.encode()) is NoSuchImage


def image_info_from_config(
    *, image_id: str, tags: Sequence[str], author: str, comment: str, config: Mapping[str, Any]
) -> ImageInfo:
    """ImageInfo from an image config in Docker's shape (`Cmd`, `Env`, `ExposedPorts`, …).
    Empty Cmd/Entrypoint lists become None: buildah writes [] where docker writes null."""
    return ImageInfo(
        id=normalise_image_id(image_id),
        tags=tuple(tags),
        labels=dict(config.get("Labels") or {}),
        author=author or "",
        comment=comment or "",
        cmd=tuple(config["Cmd"]) if config.get("Cmd") else None,
        entrypoint=tuple(config["Entrypoint"]) if config.get("Entrypoint") else None,
        env=tuple(config.get("Env") or ()),
        exposed_ports=tuple(sorted(config.get("ExposedPorts") or {})),
        user=config.get("User") or "",
        workdir=config.get("WorkingDir") or "",
    )


def image_info_from_inspect(document: Mapping[str, Any]) -> ImageInfo:
    """ImageInfo from one element of `docker/podman image inspect` output."""
    info = image_info_from_config(
        image_id=document["Id"],
        tags=document.get("RepoTags") or (),
        author=document.get("Author") or "",
        comment=document.get("Comment") or "",
        config=document.get("Config") or {},
    )
    size = document.get("Size")
    return dataclasses.replace(
        info,
        size=size if isinstance(size, int) else None,
        created=str(document.get("Created") or ""),
        layers=tuple((document.get("RootFS") or {}).get("Layers") or ()),
        architecture=str(document.get("Architecture") or ""),
    )


# docker's HumanSize: decimal units, "%.4g" ("169MB", "31.14kB", "1.234GB", "0B")
_HUMAN_SIZE = re.compile(r"^\s*([0-9.]+)\s*(?:([kMGTP]?)B)?\s*$")
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def human_size_bytes(text: str) -> int:
    """Bytes from docker's rounded human size ("169MB" → 169000000) or a plain count of
    bytes (podman's RawSize); ValueError otherwise."""
    match = _HUMAN_SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return round(float(match.group(1)) * _DECIMAL[match.group(2) or ""])


def store_bytes(output: str) -> int:
    """The Images line of `system df --format '{{.Type}}|{{.Size}}'`, in bytes."""
    for line in output.splitlines():
        kind, _, size = line.partition("|")
        if kind.strip() == "Images":
            return human_size_bytes(size)
    raise ValueError(f"no Images line in {output!r}")


# refs per `image inspect`: keeps argv short whatever the family's size


# How `image inspect` names a missing ref: podman/buildah "<ref>: image not known",
# docker "No such image: <ref>".
_MISSING_REF = re.compile(r"(?:\s(\S+): image not known|No such image: (\S+))\s*$")


def named_missing(stderr: str) -> set[str]:
    """The refs an `image inspect` error output says are missing."""
    found = set()
    for line in stderr.splitlines():
        match = _MISSING_REF.search(line)
        if match:
            found.add(match.group(1) or match.group(2))
    return found


def inspected_batch(
    batch: Sequence[str], output: CommandOutput
) -> dict[str, ImageInfo | None] | None:
    """Each ref of `batch` → its ImageInfo (None when missing), from the output of one
    `image inspect <batch…>`; None when the output does not add up.

    The engines print the documents of the refs they found, in argument order, and
    name each missing ref on stderr. An unexpected message makes the two disagree: the
    caller then asks per ref, never trusting a wrong pairing.
    """
    missing = set(batch) & named_missing(output.stderr) if output.returncode else set()
    present = [ref for ref in batch if ref not in missing]
    try:
        documents = json.loads(output.stdout or "[]")
    except json.JSONDecodeError:
        return None
    if not isinstance(documents, list) or len(documents) != len(present):
        return None
    found: dict[str, ImageInfo | None] = dict.fromkeys(missing)
    found.update(
        {ref: image_info_from_inspect(doc) for ref, doc in zip(present, documents, strict=True)}
    )
    return found


def loaded_refs(output: str) -> list[str]:
    """References (or IDs) a `load` printed: docker "Loaded image: a:b" / "Loaded image ID:
    sha256:…", podman "Loaded image(s): a:b,c:d" or "Loaded image: a:b"."""
    refs: list[str] = []
    for line in output.splitlines():
        if line.startswith("Loaded image"):
            _, _, listed = line.partition(": ")
            refs += [ref.strip() for ref in listed.split(",") if ref.strip()]
    return refs


def published_ports(ports: Mapping[str, Any] | None, publish: Sequence[int]) -> dict[int, int]:
    """Container port → host port from `container inspect`'s NetworkSettings.Ports;
    EngineError when a port in `publish` got none."""
    found: dict[int, int] = {}
    for port in publish:
        for binding in (ports or {}).get(f"{port}/tcp") or ():
            if binding.get("HostPort"):
                found[port] = int(binding["HostPort"])
                break
    missing = [p for p in publish if p not in found]
    if missing:
        raise EngineError(["inspect"], 1, f"no host port was published for {missing}: {ports}")
    return found


def build_secrets(container_dir: Path) -> list[str]:
    """The `--secret` options of the build that made working container `container_dir`
    (containers/storage's `<id>` folder), from its buildah.json; [] for other containers."""
    try:
        document = json.loads((container_dir / "userdata" / "buildah.json").read_text())
    except (OSError, ValueError):
        return []
    secrets = (document.get("CommonBuildOpts") or {}).get("Secrets") or []
    return [str(s) for s in secrets]


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DOCKER_PUSHED = re.compile(r"\bdigest: (sha256:[0-9a-f]{64})\b")


def pushed_digest(output: str, destination: str) -> str:
    """The manifest digest a push reported: podman/buildah's --digestfile holds just the
    digest; `docker push` ends with "<tag>: digest: sha256:… size: N". EngineError when
    there is none (the push cannot be recorded by digest)."""
    text = output.strip()
    if _DIGEST.fullmatch(text):
        return text
    found = _DOCKER_PUSHED.findall(text)
    if found:
        return str(found[-1])
    raise EngineError(
        ["push", destination], 0, f"no manifest digest in the push output: {text[-500:]!r}"
    )


_NO_MANIFEST = re.compile(r"manifest unknown|name unknown|not found", re.IGNORECASE)


def says_manifest_missing(error: EngineError) -> bool:
    """Whether a failed pull failed because the registry has no such manifest (podman,
    buildah "manifest unknown", docker "manifest for … not found"): not an error, a miss."""
    return bool(_NO_MANIFEST.search(error.stderr)) and "connection refused" not in error.stderr
