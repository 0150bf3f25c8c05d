"""Fingerprints: one digest over everything that decides what a build produces.

An image's fingerprint covers its assembled context, its recipe (Dockerfile
bytes or the commit recipe), build args, labels, build options, and the image
IDs of what it builds on. It is stored on the image as the label
`lowbuild.fingerprint`; same fingerprint → nothing to build.

The engine is not in it: every engine lowbuild drives writes the same (docker)
image format from the same inputs, so an image podman built is what buildah,
docker or buildx would build from them. That is what lets podman and buildah
share one storage without rebuilding, and a docker runner take a podman
runner's image from a registry cache (both engines give it the same ID, its
config digest, so its children's fingerprints agree too). The engine that
built an image is still recorded in `lowbuild.inputs`.

Next to it, `lowbuild.inputs` records the inputs themselves in a compact form,
so that when the fingerprint differs lowbuild can say *why*: "context changed:
files nginx.conf", "context changed: packs site/ → site/index.html", "build args
changed: NGINX_VERSION", "parent rebuilt (base)". To keep that label small,
per-file and per-value digests are shortened, and per-file digests are recorded
only for contexts of at most MAX_RECORDED_FILES files (packed files counted in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lowbuild.plan.graph import Node
from lowbuild.spec.model import CommitRecipe, ImageSpec, RecipeKind

FORMAT_VERSION = 2  # 2: the engine left the fingerprint
FINGERPRINT_LABEL = "lowbuild.fingerprint"
INPUTS_LABEL = "lowbuild.inputs"
# "sha256:<hex>" of the image's SBOM (run/sbom.py); "" on an image built without one
# (a parent's is not inherited). Not an input: it is known only once the image is built.
SBOM_LABEL = "lowbuild.sbom"
# What the build gives the label until the SBOM step relabels the image: an image still
# carrying it is one whose run was cut short between the two, and is built again.
SBOM_PENDING = "pending"


def labelled_sbom(labels: Mapping[str, str]) -> str | None:
    """The SBOM digest an image's labels name; None for one built without an SBOM, or
    whose run was cut short before its SBOM was written."""
    label = labels.get(SBOM_LABEL, "")
    return label if label.startswith("sha256:") else None


MAX_RECORDED_FILES = 128
SHORT_DIGEST = 16  # hex digits kept per file / value in the inputs label: enough to see a change
MAX_NAMED_FILES = 10  # a reason names at most this many files, then "and N more"


@dataclass(frozen=True)
class BuildInputs:
    """What one image build depends on. Build it with `inputs_for`.

    `files` maps each context file (relative POSIX path) to the sha256 hex of its
    content; `context` is the digest of the whole assembled context (which also
    covers modes and anything else the assembler puts in it). `family` maps each
    family image the build needs (the parent among them) to its image ID;
    `external` does the same for images from outside the family, by reference.
    `packs` lists, for each pack (by the path it lands on), its source directory and
    the sha256 hex of each file it packs (paths relative to that directory).
    """

    context: str
    files: tuple[tuple[str, str], ...]
    recipe_kind: RecipeKind
    recipe_file: str
    recipe: str
    # Commit recipes: each part's short digest, so a rebuild can name the part that changed.
    recipe_parts: tuple[tuple[str, str], ...] = field(default=(), kw_only=True)
    args: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    engine: str
    options: tuple[tuple[str, str], ...]
    parent: str | None
    family: tuple[tuple[str, str], ...]
    external: tuple[tuple[str, str], ...]
    packs: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()


def inputs_for(
    node: Node,
    *,
    engine: str,
    context_digest: str,
    context_files: Mapping[str, str],
    family_ids: Mapping[str, str],
    external_ids: Mapping[str, str],
    options: Mapping[str, str] | None = None,
    pack_files: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
) -> BuildInputs:
    """The inputs of building `node` now.

    `family_ids` must hold the image ID of every name in `node.needs`, and
    `external_ids` of every ref in `node.external` (extra entries are ignored);
    `options` are engine build options beyond the image's own `network`;
    `pack_files` maps each pack's path to (its source directory, {file: sha256 hex}).
    Reads the Dockerfile (its bytes are an input); everything else is given.
    """
    spec = node.spec
    missing = [name for name in node.needs if name not in family_ids]
    missing += [ref for ref in node.external if ref not in external_ids]
    if missing:
        raise ValueError(f"{node.name}: no image ID given for {', '.join(missing)}")
    return BuildInputs(
        context=context_digest,
        files=tuple(sorted(context_files.items())),
        recipe_kind=spec.kind,
        recipe_file=spec.dockerfile if spec.kind == "dockerfile" else "",
        recipe=recipe_digest(spec),
        recipe_parts=_recipe_parts(spec),
        args=tuple(sorted(spec.args)),
        labels=tuple(sorted(spec.labels)),
        engine=engine,
        options=tuple(sorted({"network": spec.network, **(options or {})}.items())),
        parent=node.parent,
        family=tuple(sorted((name, family_ids[name]) for name in node.needs)),
        external=tuple(sorted((ref, external_ids[ref]) for ref in node.external)),
        packs=tuple(
            (into, source, tuple(sorted(files.items())))
            for into, (source, files) in sorted((pack_files or {}).items())
        ),
    )


def recipe_digest(spec: ImageSpec) -> str:
    """sha256 hex of the Dockerfile's bytes, or of the commit recipe's canonical form."""
    if spec.commit is not None:
        return _sha256(_canonical(_commit_form(spec.commit)))
    return _sha256(spec.dockerfile_path.read_bytes())


def _recipe_parts(spec: ImageSpec) -> tuple[tuple[str, str], ...]:
    """A commit recipe's parts (base, author, message, steps, changes), each as a short
    digest: recorded so that a rebuild can say which part changed. The fingerprint
    needs none of them: the recipe digest covers the whole."""
    if spec.commit is None:
        return ()
    return tuple(
        sorted(
            (part, _short(_canonical(value))) for part, value in _commit_form(spec.commit).items()
        )
    )


def fingerprint(inputs: BuildInputs) -> str:
    """`sha256:<hex>` over the canonical JSON of the inputs. Pure: same inputs, same
    fingerprint. Per-file digests are left out: the context digest covers them."""
    fingerprinted = {
        "version": FORMAT_VERSION,
        "context": inputs.context,
        "recipe": [inputs.recipe_kind, inputs.recipe_file, inputs.recipe],
        "args": dict(inputs.args),
        "labels": dict(inputs.labels),
        "options": dict(inputs.options),
        "parent": inputs.parent,
        "family": dict(inputs.family),
        "external": dict(inputs.external),
    }
    return "sha256:" + _sha256(_canonical(fingerprinted))


def fingerprint_labels(inputs: BuildInputs) -> dict[str, str]:
    """The labels to put on the built image: its fingerprint and its recorded inputs."""
    return {
        FINGERPRINT_LABEL: fingerprint(inputs),
        INPUTS_LABEL: _canonical(_record(inputs)).decode(),
    }


def rebuild_reasons(labels: Mapping[str, str] | None, inputs: BuildInputs) -> tuple[str, ...]:
    """Why the image must be built, given the labels of the existing image (None
    when there is none) and the inputs now. Empty means up to date."""
    if labels is None:
        return ("new image",)
    before_fingerprint = labels.get(FINGERPRINT_LABEL)
    if before_fingerprint is None:
        return (f"existing image has no {FINGERPRINT_LABEL} label (not built by lowbuild)",)
    if before_fingerprint == fingerprint(inputs):
        if labels.get(SBOM_LABEL) == SBOM_PENDING:
            return ("its SBOM was never written (the run that built it was cut short)",)
        return ()
    return _record_changes(labels, _record(inputs))


def label_changes(before: Mapping[str, str], now: Mapping[str, str]) -> tuple[str, ...]:
    """What changed between two builds of an image, from their labels (`lowbuild images`
    compares an image with its previous build); empty when the fingerprints agree."""
    if before.get(FINGERPRINT_LABEL) == now.get(FINGERPRINT_LABEL):
        return ()
    record = _parse_record(now.get(INPUTS_LABEL))
    if record is None:
        return ("fingerprint changed (no readable record of the inputs)",)
    return _record_changes(before, record)


def _record_changes(labels: Mapping[str, str], now: Mapping[str, Any]) -> tuple[str, ...]:
    """The reasons the inputs record `now` differs from the one in `labels`."""
    before = _parse_record(labels.get(INPUTS_LABEL))
    if before is None:
        return ("fingerprint changed (no readable record of the previous inputs)",)
    if before.get("v") != FORMAT_VERSION or now.get("v") != FORMAT_VERSION:
        return ("fingerprint format changed",)
    reasons = [
        *_context_reasons(before, now),
        *_recipe_reasons(before, now),
        *_changed_keys("build args changed", before, now, "args"),
        *_changed_keys("labels changed", before, now, "labels"),
        *_changed_keys("build options changed", before, now, "options"),
        *_image_reasons(before, now),
    ]
    return tuple(reasons) or ("fingerprint changed",)


# ---- the recorded form (the lowbuild.inputs label) ----


def _record(inputs: BuildInputs) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "context": inputs.context,
        "recipe": {"kind": inputs.recipe_kind, "file": inputs.recipe_file, "digest": inputs.recipe},
        "recipe_parts": dict(inputs.recipe_parts),  # empty but for commit recipes
        # Values are recorded as short digests: build args may hold things not meant for labels.
        "args": {key: _short(value.encode()) for key, value in inputs.args},
        "labels": {key: _short(value.encode()) for key, value in inputs.labels},
        "engine": inputs.engine,  # who built it: a record, not an input of the fingerprint
        "options": dict(inputs.options),
        "parent": inputs.parent,
        "family": dict(inputs.family),
        "external": dict(inputs.external),
    }
    packed = sum(len(files) for _into, _source, files in inputs.packs)
    if len(inputs.files) + packed <= MAX_RECORDED_FILES:
        record["files"] = {
            path: digest.removeprefix("sha256:")[:SHORT_DIGEST] for path, digest in inputs.files
        }
        if inputs.packs:
            record["packs"] = {
                into: {
                    "from": source,
                    "files": {path: digest[:SHORT_DIGEST] for path, digest in files},
                }
                for into, source, files in inputs.packs
            }
    return record


def _parse_record(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _context_reasons(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    if before.get("context") == now["context"]:
        return []
    old, new = before.get("files"), now.get("files")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ["context changed"]
    changed = [path for path in sorted(old.keys() | new.keys()) if old.get(path) != new.get(path)]
    # The Dockerfile is in the context too; it gets its own reason below.
    if _recipe_changed(before, now):
        changed = [path for path in changed if path != now["recipe"]["file"]]
        if not changed:
            return []
    if not changed:
        return ["context changed"]  # modes or other metadata the per-file digests do not cover
    # A changed pack is named by the files changed in its source, not by the archive.
    old_packs, new_packs = _packs(before), _packs(now)
    packs = [path for path in changed if path in old_packs and path in new_packs]
    parts = []
    files = [path for path in changed if path not in packs]
    if files:
        parts.append(f"files {_named(files, old, new)}")
    for into in packs:
        parts.append(_pack_change(old_packs[into], new_packs[into]))
    return [f"context changed: {'; '.join(parts)}"]


def _packs(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The recorded packs that list their files (older labels record none)."""
    packs = record.get("packs")
    if not isinstance(packs, dict):
        return {}
    return {
        into: pack
        for into, pack in packs.items()
        if isinstance(pack, dict) and isinstance(pack.get("files"), dict)
    }


def _pack_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    source = str(new.get("from", "."))
    shown = "./" if source == "." else f"{source}/"
    before, after = old["files"], new["files"]
    changed = sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )
    if old.get("from") != new.get("from") or not changed:
        return f"packs {shown}"  # another source, or modes/symlinks: no file to name
    prefix = "" if source == "." else shown
    return f"packs {shown} → {_named(changed, before, after, prefix=prefix)}"


def _named(
    changed: list[str], old: Mapping[str, Any], new: Mapping[str, Any], *, prefix: str = ""
) -> str:
    """`changed` paths, at most MAX_NAMED_FILES of them, each marked added/removed."""
    named = [prefix + _file_change(path, old, new) for path in changed[:MAX_NAMED_FILES]]
    more = f" and {len(changed) - MAX_NAMED_FILES} more" if len(changed) > MAX_NAMED_FILES else ""
    return f"{', '.join(named)}{more}"


def _file_change(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    if path not in old:
        return f"{path} (added)"
    if path not in new:
        return f"{path} (removed)"
    return path


def _recipe_changed(before: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    return bool(before.get("recipe") != now["recipe"])


def _recipe_reasons(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    if not _recipe_changed(before, now):
        return []
    old, new = before.get("recipe") or {}, now["recipe"]
    if old.get("kind") != new["kind"]:
        return [f"recipe kind changed: {old.get('kind')} → {new['kind']}"]
    if new["kind"] == "commit":
        old_parts, new_parts = before.get("recipe_parts"), now.get("recipe_parts")
        if isinstance(old_parts, dict) and isinstance(new_parts, dict):
            parts = sorted(
                p
                for p in old_parts.keys() | new_parts.keys()
                if old_parts.get(p) != new_parts.get(p)
            )
            if parts:
                return [f"commit recipe changed: {', '.join(parts)}"]
        return ["commit recipe changed"]
    if old.get("file") != new["file"]:
        return [f"Dockerfile changed: now {new['file']} (was {old.get('file')})"]
    return [f"{new['file']} changed"]


def _changed_keys(
    title: str, before: Mapping[str, Any], now: Mapping[str, Any], field: str
) -> list[str]:
    old, new = before.get(field) or {}, now[field]
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    return [f"{title}: {', '.join(changed)}"] if changed else []


def _image_reasons(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    reasons = []
    old_parent, parent = before.get("parent"), now["parent"]
    if old_parent != parent:
        reasons.append(f"parent changed: {old_parent or 'none'} → {parent or 'none'}")
    old_family, new_family = before.get("family") or {}, now["family"]
    for name in sorted(old_family.keys() | new_family.keys()):
        if old_family.get(name) == new_family.get(name) or (
            old_parent != parent and name in (old_parent, parent)
        ):
            continue  # unchanged, or already told as "parent changed"
        if name not in new_family:
            reasons.append(f"no longer needs {name}")
        elif name not in old_family:
            reasons.append(f"now needs {name}")
        else:
            reasons.append(f"{'parent' if name == parent else 'needed image'} rebuilt ({name})")
    old_external, new_external = before.get("external") or {}, now["external"]
    changed = sorted(
        ref
        for ref in old_external.keys() | new_external.keys()
        if old_external.get(ref) != new_external.get(ref)
    )
    if changed:
        reasons.append(f"base image changed: {', '.join(changed)}")
    return reasons


# ---- canonical bytes ----


def _commit_form(recipe: CommitRecipe) -> dict[str, Any]:
    return {
        "base": recipe.base,
        "author": recipe.author,
        "message": recipe.message,
        "steps": [{"run": s.run, "copy": s.copy, "dest": s.dest} for s in recipe.steps],
        "changes": list(recipe.changes),
    }


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _short(data: bytes) -> str:
    return _sha256(data)[:SHORT_DIGEST]
