"""What an image is made of, written as it is built: a CycloneDX SBOM and an in-toto
statement with a SLSA provenance predicate.

lowbuild knows every input exactly (each artifact's URLs and sha256, each pack's
digest, the parent's and bases' image IDs), so the SBOM says them from the spec and the
build, not from a scan; the OS packages are the one part read from the image itself, by
asking its package manager (dpkg, rpm or apk) in a container of it.

CycloneDX 1.6 JSON, made with cyclonedx-python-lib: a container image is one of its
component types, artifacts and packs are `file` components with hashes and
distribution references, and the library ships the official JSON schemas (the tests
validate every SBOM against them).

The SBOM of an image is a function of that image alone (no wall-clock time, a serial
number derived from its content): the same image gives the same bytes, so the digest the
image carries in its `lowbuild.sbom` label names one document. The provenance statement,
which records when the build ran, is not labelled.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lowbuild import __version__
from lowbuild.engines.base import Engine
from lowbuild.errors import EngineError
from lowbuild.plan.fingerprint import SBOM_LABEL as SBOM_LABEL
from lowbuild.spec.versions import name_and_version

if TYPE_CHECKING:
    from packageurl import PackageURL

SBOM_FORMAT = "cyclonedx"
SBOM_DIR = "sbom"  # under the project's state directory (.lowbuild/)
PROVENANCE_DIR = "provenance"
PACKAGE_LIST_TIMEOUT_S = 120.0

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PREDICATE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:lowbuild:build-type:image:v1"
BUILDER_ID = "urn:lowbuild:builder"

# The serial numbers of lowbuild's SBOMs: uuid5 in this namespace of the document's content.
_SERIAL_NAMESPACE = uuid.UUID("6f1c3c1e-8a4b-5d3e-9b61-1c0d5c2a7e42")

Manager = Literal["dpkg", "rpm", "apk"]

# Run by /bin/sh in a container of the image (no network): the distribution, then the
# first package manager found and what it says is installed, one package per line.
PACKAGE_SCRIPT = r"""
for f in /etc/os-release /usr/lib/os-release; do
  if [ -r "$f" ]; then . "$f"; break; fi
done
echo "@distro ${ID:-} ${VERSION_ID:-}"
# A database as well as the command: busybox has `rpm` and `dpkg` applets and neither.
if [ -f /var/lib/dpkg/status ] && command -v dpkg-query >/dev/null 2>&1; then
  echo "@manager dpkg"
  dpkg-query -W -f='@pkg ${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n'
elif { [ -d /var/lib/rpm ] || [ -d /usr/lib/sysimage/rpm ]; } &&
    command -v rpm >/dev/null 2>&1; then
  echo "@manager rpm"
  rpm -qa --qf '@pkg ii \t%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\n'
elif [ -r /lib/apk/db/installed ]; then
  echo "@manager apk"
  sed -n -e 's/^P:/@apk-P /p' -e 's/^V:/@apk-V /p' -e 's/^A:/@apk-A /p' /lib/apk/db/installed
else
  echo "@manager none"
fi
"""


@dataclass(frozen=True, order=True)
class OsPackage:
    name: str
    version: str
    arch: str = ""


@dataclass(frozen=True)
class PackageListing:
    """The OS packages installed in an image, as its package manager says."""

    manager: Manager | None
    packages: tuple[OsPackage, ...] = ()
    distro: str = ""  # os-release ID ("debian")
    distro_version: str = ""  # os-release VERSION_ID ("12")
    note: str = ""  # why there is no list, when there is none

    def summary(self) -> str:
        if self.manager is None:
            return self.note
        return f"{len(self.packages)} {self.manager} package(s)"


def parse_package_listing(output: str) -> PackageListing:
    """PACKAGE_SCRIPT's output → the listing. Lines it did not print (an engine's
    warnings on stderr) are ignored."""
    distro = distro_version = ""
    manager: str | None = None
    packages: set[OsPackage] = set()
    apk: dict[str, str] = {}

    def flush_apk() -> None:
        if "P" in apk and "V" in apk:
            packages.add(OsPackage(apk["P"], apk["V"], apk.get("A", "")))
        apk.clear()

    for line in output.splitlines():
        if line.startswith("@distro "):
            words = line.split()
            distro = words[1] if len(words) > 1 else ""
            distro_version = words[2] if len(words) > 2 else ""
        elif line.startswith("@manager "):
            manager = line.split(maxsplit=1)[1].strip()
        elif line.startswith("@pkg "):
            parts = line[len("@pkg ") :].split("\t")
            # dpkg's status: "ii " is installed; "rc " (removed, config files kept) is not
            if len(parts) == 4 and parts[0].startswith("ii") and parts[1]:
                packages.add(OsPackage(parts[1], parts[2], parts[3]))
        elif line.startswith("@apk-"):
            key, _, value = line[len("@apk-") :].partition(" ")
            if key == "P":
                flush_apk()
            apk[key] = value.strip()
    flush_apk()
    if manager not in ("dpkg", "rpm", "apk"):
        return PackageListing(
            manager=None,
            distro=distro,
            distro_version=distro_version,
            note="no package manager in the image (looked for dpkg, rpm and apk): "
            "no OS packages are listed",
        )
    return PackageListing(
        manager=manager,  # type: ignore[arg-type]  # checked just above
        packages=tuple(sorted(packages)),
        distro=distro,
        distro_version=distro_version,
    )


def read_packages(engine: Engine, ref: str, *, timeout: float) -> PackageListing:
    """Ask the image's own package manager what is installed, in a container of it with
    no network. An image without /bin/sh gets no list, said in its note; one that cannot
    run here ("exec format error") or runs out of time is an EngineError."""
    try:
        code, output = engine.run_once(
            image=ref,
            command=["-c", PACKAGE_SCRIPT],
            entrypoint="/bin/sh",
            network="none",
            timeout=timeout,
        )
    except EngineError as exc:
        said = exc.stderr.lower()
        missing = "executable file not found" in said or "no such file or directory" in said
        if (exc.returncode == 127 or missing) and "exec format error" not in said:
            lines = exc.stderr.strip().splitlines()
            return PackageListing(
                manager=None,
                note="the image has no /bin/sh to ask its package manager with: no OS "
                f"packages are listed ({lines[-1] if lines else exc.returncode})",
            )
        raise
    if code != 0:
        # An EngineError, as a failed RUN step is: "exec format error" (a platform this
        # host cannot run) then gets the same hint (run/build.py _build_one).
        tail = " / ".join(output.strip().splitlines()[-3:])
        raise EngineError(
            [engine.name, "run", ref, "/bin/sh", "-c", "(list the installed packages)"],
            code,
            f"{ref}: listing the installed packages failed (exit {code}): {tail}",
        )
    return parse_package_listing(output)


# --- what the SBOM says ---------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFact:
    file: str
    sha256: str  # hex
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackFact:
    into: str
    source: str
    sha256: str  # hex of the packed file as staged


@dataclass(frozen=True)
class ImageRef:
    """A parent or base: its reference, image ID and (when known) registry digest."""

    ref: str
    image_id: str  # "sha256:<hex>"
    digest: str = ""  # "sha256:<hex>" of its manifest in a registry, when published
    family: bool = True


@dataclass(frozen=True)
class ImageFacts:
    """Everything an image's SBOM says."""

    key: str  # the family image (or its platform's variant: "web@linux-arm64")
    name: str
    ref: str
    version: str
    project: str
    fingerprint: str
    created: str  # the image's org.opencontainers.image.created
    platform: str = ""
    artifacts: tuple[ArtifactFact, ...] = ()
    packs: tuple[PackFact, ...] = ()
    parents: tuple[ImageRef, ...] = ()
    packages: PackageListing = field(default_factory=lambda: PackageListing(manager=None))


def render_sbom(facts: ImageFacts) -> bytes:
    """The image's CycloneDX 1.6 JSON SBOM; the same facts give the same bytes."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.bom_ref import BomRef
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    def sha256(hex_digest: str) -> HashType:
        return HashType(alg=HashAlgorithm.SHA_256, content=hex_digest.removeprefix("sha256:"))

    components: list[Component] = []
    for artifact in facts.artifacts:
        name, version = name_and_version(artifact.file)
        qualifiers = {"checksum": f"sha256:{artifact.sha256}"}
        if artifact.urls:
            qualifiers["download_url"] = artifact.urls[0]
        components.append(
            Component(
                type=ComponentType.FILE,
                name=name,
                version=version or None,
                bom_ref=BomRef(f"artifact:{artifact.file}"),
                hashes=[sha256(artifact.sha256)],
                purl=PackageURL(
                    type="generic", name=name, version=version or None, qualifiers=qualifiers
                ),
                external_references=[
                    ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(url))
                    for url in artifact.urls
                ],
                properties=[Property(name="lowbuild:file", value=artifact.file)],
            )
        )
    for pack in facts.packs:
        components.append(
            Component(
                type=ComponentType.FILE,
                name=pack.into,
                bom_ref=BomRef(f"pack:{pack.into}"),
                hashes=[sha256(pack.sha256)],
                properties=[Property(name="lowbuild:pack-source", value=pack.source)],
            )
        )
    for parent in facts.parents:
        properties = [
            Property(name="lowbuild:image-id", value=parent.image_id),
            Property(name="lowbuild:relation", value="parent" if parent.family else "base"),
        ]
        purl = None
        if parent.digest:
            properties.append(Property(name="lowbuild:registry-digest", value=parent.digest))
            repository, _, tag = _split_ref(parent.ref)
            purl = PackageURL(
                type="oci",
                name=repository.rsplit("/", 1)[-1],
                version=parent.digest,
                qualifiers={"repository_url": repository, **({"tag": tag} if tag else {})},
            )
        components.append(
            Component(
                type=ComponentType.CONTAINER,
                name=parent.ref,
                bom_ref=BomRef(f"image:{parent.ref}"),
                # an image ID is the sha256 of the image's configuration
                hashes=[sha256(parent.image_id)],
                purl=purl,
                properties=properties,
            )
        )
    listing = facts.packages
    seen: set[str] = set()
    for package in listing.packages:
        purl = _package_url(listing, package)
        ref = str(purl)
        if ref in seen:
            continue
        seen.add(ref)
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package.name,
                version=package.version or None,
                bom_ref=BomRef(ref),
                purl=purl,
            )
        )

    root_properties = [
        Property(name="lowbuild:fingerprint", value=facts.fingerprint),
        Property(name="lowbuild:project", value=facts.project),
        Property(name="lowbuild:packages", value=listing.summary()),
    ]
    if facts.platform:
        root_properties.append(Property(name="lowbuild:platform", value=facts.platform))
    if listing.distro:
        distro = f"{listing.distro} {listing.distro_version}".strip()
        root_properties.append(Property(name="lowbuild:distro", value=distro))
    root = Component(
        type=ComponentType.CONTAINER,
        name=facts.name,
        version=facts.version or None,
        bom_ref=BomRef(f"lowbuild-image:{facts.key}"),
        properties=root_properties,
        external_references=[],
    )
    tool = Component(type=ComponentType.APPLICATION, name="lowbuild", version=__version__)
    serial = uuid.uuid5(
        _SERIAL_NAMESPACE,
        json.dumps(_facts_key(facts), sort_keys=True, separators=(",", ":")),
    )
    bom = Bom(
        components=components,
        serial_number=serial,
        metadata=BomMetaData(
            component=root,
            tools=ToolRepository(components=[tool]),
            timestamp=_timestamp(facts.created),
        ),
    )
    bom.register_dependency(root, components)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    return (text + "\n").encode("utf-8")


def _facts_key(facts: ImageFacts) -> object:
    """The facts as plain data (what the serial number is derived from)."""
    listing = facts.packages
    return {
        "image": [facts.key, facts.ref, facts.version, facts.project, facts.fingerprint],
        "created": facts.created,
        "platform": facts.platform,
        "artifacts": [[a.file, a.sha256, list(a.urls)] for a in facts.artifacts],
        "packs": [[p.into, p.source, p.sha256] for p in facts.packs],
        "parents": [[p.ref, p.image_id, p.digest, p.family] for p in facts.parents],
        "packages": [listing.manager, listing.distro, listing.distro_version, listing.note]
        + [[p.name, p.version, p.arch] for p in listing.packages],
    }


def _timestamp(created: str) -> datetime:
    try:
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)


def _split_ref(ref: str) -> tuple[str, str, str]:
    """`host/path:tag` → ("host/path", ":", "tag"); no tag → (ref, "", "")."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = ref.rpartition(":")
        return repository, ":", tag
    return ref, "", ""


def _package_url(listing: PackageListing, package: OsPackage) -> PackageURL:
    from packageurl import PackageURL

    kind = {"dpkg": "deb", "rpm": "rpm", "apk": "apk"}[listing.manager or "dpkg"]
    namespace = listing.distro or None
    qualifiers: dict[str, str] = {}
    if package.arch:
        qualifiers["arch"] = package.arch
    if listing.distro:
        qualifiers["distro"] = "-".join(p for p in (listing.distro, listing.distro_version) if p)
    return PackageURL(
        type=kind,
        namespace=namespace,
        name=package.name,
        version=package.version or None,
        qualifiers=qualifiers,
    )


def sbom_digest(document: bytes) -> str:
    return "sha256:" + hashlib.sha256(document).hexdigest()


# --- provenance -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildRun:
    """How the image was built: by which engine, when, in which lowbuild run."""

    engine: str
    engine_version: str
    started: datetime
    finished: datetime
    run_id: str
    recipe_kind: str
    recipe_file: str
    args: Mapping[str, str]
    context_digest: str
    image_id: str
    refs: Sequence[str]


def provenance_statement(facts: ImageFacts, run: BuildRun, *, sbom: str) -> dict[str, object]:
    """An in-toto Statement (v1) whose predicate is SLSA provenance v1: the image (by ID,
    under each of its refs) built from the fingerprint's inputs by the engine named."""

    def when(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def digest(value: str) -> dict[str, str]:
        return {"sha256": value.removeprefix("sha256:")}

    dependencies: list[dict[str, object]] = [
        {"name": "context", "digest": digest(run.context_digest)},
    ]
    for artifact in facts.artifacts:
        entry: dict[str, object] = {"name": artifact.file, "digest": digest(artifact.sha256)}
        if artifact.urls:
            entry["uri"] = artifact.urls[0]
        dependencies.append(entry)
    for pack in facts.packs:
        dependencies.append({"name": pack.into, "digest": digest(pack.sha256)})
    for parent in facts.parents:
        entry = {"name": parent.ref, "digest": digest(parent.image_id)}
        if parent.digest:
            entry["annotations"] = {"registryDigest": parent.digest}
        dependencies.append(entry)
    subject_digest = digest(run.image_id)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": ref, "digest": subject_digest} for ref in run.refs],
        "predicateType": SLSA_PREDICATE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "project": facts.project,
                    "image": facts.key,
                    "recipe": {"kind": run.recipe_kind, "file": run.recipe_file},
                    "args": dict(run.args),
                    **({"platform": facts.platform} if facts.platform else {}),
                },
                "internalParameters": {
                    "fingerprint": facts.fingerprint,
                    "engine": run.engine,
                    "engineVersion": run.engine_version,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": f"{BUILDER_ID}:{run.engine}",
                    "version": {"lowbuild": __version__, run.engine: run.engine_version},
                },
                "metadata": {
                    "invocationId": run.run_id,
                    "startedOn": when(run.started),
                    "finishedOn": when(run.finished),
                },
                "byproducts": [{"name": f"{facts.key}.{SBOM_FORMAT}.json", "digest": digest(sbom)}],
            },
        },
    }


# --- where they are kept --------------------------------------------------------------


def sbom_path(state_dir: Path, key: str) -> Path:
    return state_dir / SBOM_DIR / f"{key}.{SBOM_FORMAT}.json"


def provenance_path(state_dir: Path, key: str) -> Path:
    return state_dir / PROVENANCE_DIR / f"{key}.intoto.json"
