"""From a tree read by `adopt.tree` to a family: names, tags, the tree's own references,
parents, external bases, pinned inputs, suggested smoke tests, and the findings a person
should look at. Pure: no engine, no cache, nothing written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lowbuild.adopt.tree import ImageDirectory, hand_made_from, is_input_file, urls_in_tree
from lowbuild.errors import Location, SpecError
from lowbuild.plan.graph import normalise_ref
from lowbuild.sources.cache import hash_file
from lowbuild.spec.load import IMAGE_REF_PATTERN, TAG_PATTERN
from lowbuild.spec.model import Project

_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Project)}
_DEFAULT_NAMESPACE, _DEFAULT_TAG = str(_DEFAULTS["namespace"]), str(_DEFAULTS["tag"])
_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")
_PACKAGE_INSTALL = re.compile(
    r"\b(yum|dnf|microdnf|apt-get|apt|apk)\s+(?:-\S+\s+)*(install|add)\b([^&|;]*)"
)
_PINNED_PACKAGE = re.compile(r"[=]|-\d")  # apt `pkg=1.2`, yum `pkg-1.2`
_FETCH_URLS = ("http://", "https://")


@dataclass(frozen=True)
class Finding:
    """Something init inferred or that needs a person; `file`/`line` where it was seen."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "message": self.message, "file": self.file, "line": self.line}


@dataclass(frozen=True)
class ArtifactPlan:
    file: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    path: Path  # where it lies now


@dataclass
class ImagePlan:
    """What init writes for one directory."""

    source: ImageDirectory
    name: str
    tags: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()  # the references its build scripts give it
    parent: str | None = None
    artifacts: list[ArtifactPlan] = field(default_factory=list)
    pack_suggestions: list[str] = field(default_factory=list)
    test_port: int | None = None

    @property
    def relative(self) -> str:
        return self.source.relative


@dataclass
class Adoption:
    root: Path
    name: str
    images: list[ImagePlan]
    bases: dict[str, list[str]]  # external image → the family images that use it
    findings: list[Finding]


def safe_name(text: str) -> str:
    """A lowbuild image name from any text: lowercase letters, digits, '.', '_', '-'."""
    name = _NAME_CHARS.sub("-", text.lower()).strip("-._")
    return name or "image"


def _repository_name(ref: str) -> str:
    repository = normalise_ref(ref).rsplit(":", 1)[0]
    return repository.rsplit("/", 1)[-1]


def _tag(ref: str) -> str:
    return normalise_ref(ref).rsplit(":", 1)[1]


def _relative_file(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _script_refs(root: Path, source: ImageDirectory, findings: list[Finding]) -> list[str]:
    refs: list[str] = []
    for script in source.scripts:
        file = _relative_file(root, script.path)
        for build in script.builds:
            if build.unresolved:
                findings.append(
                    Finding(
                        "tag-variable",
                        f"`{build.text}` uses ${', $'.join(build.unresolved)}, set by no plain "
                        "assignment above it: those tags are left out",
                        file,
                        build.line,
                    )
                )
            for ref in build.refs:
                if "$" in ref:
                    continue  # said above
                if IMAGE_REF_PATTERN.match(ref):
                    refs.append(ref)
                else:
                    findings.append(
                        Finding(
                            "bad-tag",
                            f"-t {ref!r} is not an image reference an engine accepts "
                            "(the path must be lowercase): left out",
                            file,
                            build.line,
                        )
                    )
            if build.context not in (None, ".", "./"):
                findings.append(
                    Finding(
                        "build-context",
                        f"builds with context {build.context!r}, not its own directory: the "
                        "family uses the directory of the Dockerfile",
                        file,
                        build.line,
                    )
                )
        for line, command in script.other:
            findings.append(
                Finding(
                    "script-command",
                    f"not run by lowbuild (it only builds): {command}",
                    file,
                    line,
                )
            )
    return list(dict.fromkeys(normalise_ref(ref) for ref in refs))


def _disambiguate(plans: list[ImagePlan], findings: list[Finding]) -> None:
    """Give colliding names a stable, readable suffix: the tag, else the directory path."""
    by_name: dict[str, list[ImagePlan]] = {}
    for plan in plans:
        by_name.setdefault(plan.name, []).append(plan)
    taken = {plan.name for plan in plans}
    for name, group in sorted(by_name.items()):
        if len(group) < 2:
            continue
        for plan in group:
            tag = next((_tag(ref) for ref in plan.refs if _repository_name(ref) == name), "")
            candidates = [
                safe_name(f"{name}-{tag}") if tag and tag != "latest" else "",
                safe_name(f"{name}-{plan.relative.replace('/', '-')}"),
            ]
            new = next(
                (c for c in candidates if c and c not in taken and c != name),
                "",
            )
            counter = 2
            while not new or new in taken:
                new = f"{name}-{counter}"
                counter += 1
            taken.add(new)
            findings.append(
                Finding(
                    "name-collision",
                    f"{len(group)} directories build an image named {name!r}: this one "
                    f"({plan.relative}) is named {new!r}",
                    f"{plan.relative}/Dockerfile" if plan.relative != "." else "Dockerfile",
                )
            )
            plan.name = new


def _check_cycles(plans: list[ImagePlan], root: Path) -> None:
    by_name = {plan.name: plan for plan in plans}
    for start in plans:
        seen = [start.name]
        current = start.parent
        while current is not None:
            if current in seen:
                cycle = [*seen[seen.index(current) :], current]
                places = []
                for name in cycle[:-1]:
                    final = by_name[name].source.images.final_base
                    line = final.line if final is not None else 1
                    places.append(f"{_relative_file(root, by_name[name].source.dockerfile)}:{line}")
                raise SpecError(
                    "the FROM lines go round in a circle: "
                    + " → ".join(cycle)
                    + f" ({', '.join(places)})",
                    Location(by_name[cycle[0]].source.dockerfile, 1),
                )
            seen.append(current)
            current = by_name[current].parent


def _instruction_findings(root: Path, source: ImageDirectory) -> Iterable[Finding]:
    file = _relative_file(root, source.dockerfile)
    for instruction in source.instructions:
        value = instruction.value
        if instruction.keyword == "MAINTAINER":
            yield Finding(
                "maintainer",
                "MAINTAINER is deprecated: use LABEL org.opencontainers.image.authors="
                + repr(value),
                file,
                instruction.line,
            )
        elif instruction.keyword in ("CMD", "ENTRYPOINT") and "tail -f" in value:
            yield Finding(
                "tail-f",
                f"the main process is `{value}`: the service itself then runs in the "
                "background, unwatched; make it the foreground process",
                file,
                instruction.line,
            )
        elif instruction.keyword == "RUN":
            for match in _PACKAGE_INSTALL.finditer(value):
                packages = [
                    word
                    for word in match.group(3).split()
                    if not word.startswith("-") and word not in ("\\",)
                ]
                loose = [p for p in packages if not _PINNED_PACKAGE.search(p)]
                if loose:
                    yield Finding(
                        "unpinned-packages",
                        f"{match.group(1)} {match.group(2)} without versions "
                        f"({', '.join(loose[:6])}{', …' if len(loose) > 6 else ''}): "
                        "a rebuild may get other packages",
                        file,
                        instruction.line,
                    )
    for line, missing in source.missing:
        yield Finding(
            "missing-source",
            f"{missing} is not in {source.relative}/: a build of this directory fails "
            "there (declare it as an artifact with its URL and sha256 if it is downloaded)",
            file,
            line,
        )
    for line, url in source.url_adds:
        yield Finding(
            "add-url",
            f"ADD {url} downloads during the build, unverified: declare it as an artifact "
            "(urls + sha256) and ADD the file",
            file,
            line,
        )
    for item in source.sources:
        path = source.directory / item.path
        if path.suffix == ".sh" and _runs_tail_f(path):
            yield Finding(
                "tail-f",
                f"{item.path} keeps the container alive with `tail -f`: make the service "
                "the foreground process instead",
                _relative_file(root, path),
            )


def _runs_tail_f(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")[:65536]
    except (OSError, UnicodeDecodeError):
        return False
    # A comment may name the anti-pattern it replaced: only commands count.
    commands = (line.split("#", 1)[0] for line in text.splitlines())
    return any(re.search(r"(^|[;&|\s])tail\s+-[a-zA-Z]*f", line) for line in commands)


def _first_port(source: ImageDirectory) -> int | None:
    for instruction in source.instructions:
        if instruction.keyword == "EXPOSE":
            for word in instruction.value.split():
                number = word.split("/", 1)[0]
                if number.isdigit() and 0 < int(number) < 65536:
                    return int(number)
    return None


def infer_family(root: Path, directories: list[ImageDirectory]) -> Adoption:
    """The family a tree of image directories makes. SpecError (exit 2) for a cycle of
    FROMs or an image built on itself."""
    root = root.resolve()
    findings: list[Finding] = []
    plans: list[ImagePlan] = []
    for source in directories:
        refs = _script_refs(root, source, findings)
        if refs:
            name = safe_name(_repository_name(refs[0]))
        else:
            base = root.name if source.relative == "." else Path(source.relative).name
            name = safe_name(base)
            findings.append(
                Finding(
                    "named-after-directory",
                    f"no build script tags it: named {name!r} after its directory",
                    _relative_file(root, source.dockerfile),
                )
            )
        tags = tuple(
            dict.fromkeys(
                _tag(ref)
                for ref in refs
                if _repository_name(ref) == _repository_name(refs[0])
                and _tag(ref) != "latest"
                and TAG_PATTERN.match(_tag(ref))
            )
        )
        plans.append(ImagePlan(source=source, name=name, tags=tags, refs=tuple(refs)))
    _disambiguate(plans, findings)

    # Which image each reference names; one built by two directories names neither.
    owners: dict[str, list[ImagePlan]] = {}
    for plan in plans:
        for ref in plan.refs:
            owners.setdefault(ref, []).append(plan)
    by_ref: dict[str, ImagePlan] = {}
    for ref, group in owners.items():
        if len(group) == 1:
            by_ref[ref] = group[0]
            continue
        where = ", ".join(plan.relative for plan in group)
        findings.append(
            Finding(
                "ref-built-twice",
                f"{ref} is built by {len(group)} directories ({where}): whichever ran last "
                "won by hand; here neither owns it, so FROM it is an external base",
            )
        )
        for plan in group:
            plan.refs = tuple(r for r in plan.refs if r != ref)

    # The names lowbuild itself gives each image (the default namespace and tag, and each
    # tag): a tree already written for lowbuild says FROM lowbuild/base:latest.
    for plan in plans:
        for tag in (_DEFAULT_TAG, *plan.tags):
            by_ref.setdefault(normalise_ref(f"{_DEFAULT_NAMESPACE}/{plan.name}:{tag}"), plan)

    bases: dict[str, list[str]] = {}
    urls = urls_in_tree(root)
    for plan in plans:
        source = plan.source
        dockerfile = _relative_file(root, source.dockerfile)
        final = source.images.final_base
        if final is not None:
            owner = by_ref.get(normalise_ref(final.ref))
            if owner is plan:
                raise SpecError(
                    f"FROM {final.ref}: the image builds on itself (its build script tags "
                    "the same name)",
                    Location(source.dockerfile, final.line),
                )
            if owner is not None:
                plan.parent = owner.name
        for use in source.images.images:
            if normalise_ref(use.ref) not in by_ref:
                bases.setdefault(use.ref, [])
                if plan.name not in bases[use.ref]:
                    bases[use.ref].append(plan.name)
        seen: set[str] = set()
        for item in source.sources:
            if item.path in seen:  # ADDed twice (by name and by a glob): one input
                continue
            seen.add(item.path)
            path = source.directory / item.path
            made_from = hand_made_from(path)
            if made_from is not None:
                suggestion = (
                    f"packs: [{{into: {item.path}, from: {made_from}/}}]"
                    if made_from != "."
                    else f"move the files {item.path} holds into a directory, e.g. "
                    f"{Path(item.path).name.split('.')[0]}/, then "
                    f"packs: [{{into: {item.path}, from: {Path(item.path).name.split('.')[0]}/}}]"
                )
                plan.pack_suggestions.append(suggestion)
                findings.append(
                    Finding(
                        "hand-made-archive",
                        f"{item.path} was made by hand from files beside it; a `packs:` entry "
                        f"makes it reproducibly at every build: {suggestion}",
                        dockerfile,
                        item.line,
                    )
                )
                continue
            if not is_input_file(path):
                continue
            found = tuple(u for u in urls.get(path.name, ()) if u.startswith(_FETCH_URLS))
            plan.artifacts.append(
                ArtifactPlan(
                    file=item.path,
                    sha256=hash_file(path),
                    size=path.stat().st_size,
                    urls=found,
                    path=path,
                )
            )
            if not found:
                findings.append(
                    Finding(
                        "cache-only",
                        f"{item.path}: no URL for it anywhere in the tree; pinned by its "
                        "sha256 and admitted to the cache, which is then its only source "
                        "(add `urls:` to let `lowbuild fetch` download it elsewhere)",
                        dockerfile,
                        item.line,
                    )
                )
        used = {item.path for item in source.sources}
        for path in sorted(source.directory.iterdir()):
            if path.is_file() and path.name not in used and is_input_file(path):
                findings.append(
                    Finding(
                        "unused-input",
                        f"{path.name} lies beside the Dockerfile, but no ADD or COPY uses it: "
                        "not pinned, not in the family (left over from an earlier version?)",
                        _relative_file(root, path),
                    )
                )
        plan.test_port = _first_port(source)
        findings += _instruction_findings(root, source)
    _check_cycles(plans, root)
    for ref, users in sorted(bases.items()):
        findings.append(
            Finding(
                "external-base",
                f"{ref} is built by nothing in the tree: an external base of "
                f"{', '.join(users)} (lowbuild never pulls it; it must be in the engine's store)",
            )
        )
    return Adoption(
        root=root, name=safe_name(root.name), images=plans, bases=bases, findings=findings
    )
