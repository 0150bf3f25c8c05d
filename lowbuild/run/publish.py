"""Publishing: push built images to registries, parents first, and record each by digest.

Every tag of an image goes to every chosen registry as `<prefix>/<name>:<tag>`; the
registry's manifest digest is what the run reports, prints as a pullable
`<prefix>/<name>@sha256:…` reference, and records in `.lowbuild/published.json` with the
fingerprint the image was built from. An image whose parent was not pushed is not pushed
either, so a registry never holds a child without the parent it was built on.

Credentials are the engine's own (`podman login`, REGISTRY_AUTH_FILE, docker's
config.json and credential helpers): lowbuild passes none and reads none.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lowbuild.engines.base import Engine, ImageInfo, LogSink, Signer
from lowbuild.engines.signing import on_loopback, sign_in_registry
from lowbuild.errors import EngineError, UsageError, did_you_mean
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL, labelled_sbom
from lowbuild.plan.graph import FamilyGraph
from lowbuild.redact import redact
from lowbuild.run.trace import Trace
from lowbuild.sources.cache import write_atomically
from lowbuild.sources.registry import RegistryClient
from lowbuild.spec.load import registry_prefix_problem
from lowbuild.spec.model import Project, Registry
from lowbuild.spec.platforms import split_key

PUBLISHED_FILE = "published.json"
"""In the project's state directory: image → what was pushed where, by digest."""

PUSH_ATTEMPTS = 3
PUSH_BACKOFF_S = 1.0  # before the second attempt; doubled before the third

# What a push that may work when tried again says: the registry restarting, a proxy's
# 5xx, a connection cut mid-upload. Refusals (auth, a missing repository) are not here.
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|i/o timeout|timed out|"
    r"TLS handshake timeout|no such host|server misbehaving|"
    r"\b(500|502|503|504)\b|Internal Server Error|Bad Gateway|Service Unavailable|"
    r"Gateway Timeout|TOOMANYREQUESTS|429",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PushOutcome:
    """One image to one registry: pushed (with its manifest digest) or not (and why)."""

    image: str
    registry: str
    prefix: str
    tags: tuple[str, ...]
    digest: str | None = None
    fingerprint: str | None = None
    error: str = ""
    image_id: str | None = None  # the local image that was pushed
    unchanged: bool = False  # the registry already served it at `digest`: nothing sent
    # A manifest list (a multi-platform image): each platform → its image's digest.
    platforms: Mapping[str, str] = field(default_factory=dict)
    sbom: str | None = None  # the image's SBOM digest (its lowbuild.sbom label)
    signed_by: str | None = None  # the GPG key (fingerprint) that signed it (push --sign)

    @property
    def pushed(self) -> bool:
        return self.digest is not None

    @property
    def repository(self) -> str:
        """Where in the registry: the image's name (a variant, `web@linux-arm64`, is
        pushed as its image `web`, under its own tags)."""
        return split_key(self.image)[0]

    @property
    def by_digest(self) -> str | None:
        """The pullable reference that names exactly what was pushed."""
        return f"{self.prefix}/{self.repository}@{self.digest}" if self.digest else None

    def to_json(self) -> dict[str, object]:
        record: dict[str, object] = {
            "image": self.image,
            "registry": self.registry,
            "pushed": self.pushed,
            "ref": self.by_digest,
            "tags": [f"{self.prefix}/{self.repository}:{tag}" for tag in self.tags],
            "digest": self.digest,
            "fingerprint": self.fingerprint,
            "unchanged": self.unchanged,
            "error": self.error or None,
            "sbom": self.sbom,
            "signed_by": self.signed_by,
        }
        if self.platforms:
            record["platforms"] = dict(self.platforms)
        return record


def chosen_registries(
    project: Project, targets: Sequence[str], *, tls_verify: bool = True
) -> tuple[Registry, ...]:
    """The registries to push to: each of `targets` is a registry named in lowbuild.yaml
    or a prefix (`host[:port][/path]`, with `tls_verify`); none: every declared one."""
    if not targets:
        if not project.registries:
            raise UsageError(
                "no registry to push to: declare `registries:` in lowbuild.yaml "
                "(name, prefix, tls-verify) or pass --to HOST[:PORT]/PATH"
            )
        return project.registries
    chosen: list[Registry] = []
    declared = {registry.name: registry for registry in project.registries}
    for target in targets:
        if target in declared:
            chosen.append(declared[target])
            continue
        if "/" not in target and ":" not in target and "." not in target:
            hint = did_you_mean(target, declared)
            known = f"; lowbuild.yaml declares: {', '.join(declared)}" if declared else ""
            raise UsageError(f"no registry named {target!r}{hint}{known}")
        prefix = target.rstrip("/")
        problem = registry_prefix_problem(prefix)
        if problem:
            raise UsageError(f"--to {target!r} {problem}")
        chosen.append(Registry(name=prefix, prefix=prefix, tls_verify=tls_verify))
    return tuple(dict.fromkeys(chosen))


def push_family(
    project: Project,
    graph: FamilyGraph,
    engine: Engine,
    names: Sequence[str],
    registries: Sequence[Registry],
    *,
    refused: Mapping[str, str] | None = None,
    published: PublishedRecord | None = None,
    log_for: Callable[[str], LogSink] = lambda name: lambda line: None,
    on_result: Callable[[PushOutcome], None] = lambda outcome: None,
    sleep: Callable[[float], None] = time.sleep,
    engine_for: Callable[[str], Engine] | None = None,
    sign: Signer | None = None,
    trace: Trace | None = None,
) -> list[PushOutcome]:
    """Push `names` (in build order) to every registry, parents before children.

    `engine_for`: the engine that holds each image (a family split over endpoints: the
    one that built it or holds it); default `engine` for all.

    `refused` names images that must not be pushed and why (failed, blocked, a smoke
    test failed); their descendants are not pushed either, nor those of an image whose
    push failed. Every push is tried PUSH_ATTEMPTS times when the failure looks
    transient. With `published` (what earlier runs pushed), an image the registry still
    serves under every tag at the digest recorded for this very local image is not
    pushed again: one manifest request per tag instead of one engine push (with `sign`,
    everything is pushed: each push signs what it pushed, by digest). Returns one
    PushOutcome per image and registry."""
    refused = dict(refused or {})
    outcomes: list[PushOutcome] = []
    engine_of = engine_for or (lambda name: engine)
    # Every local image at once: one call per engine, not one per image.
    holding: dict[int, tuple[Engine, list[str]]] = {}
    for name in names:
        if name not in refused:
            held = engine_of(name)
            holding.setdefault(id(held), (held, []))[1].append(project.ref(name))
    local: dict[str, ImageInfo | None] = {}
    for held, asked in holding.values():
        local.update(held.inspect_images(asked))
    traced = trace if trace is not None else Trace("")
    for registry in registries:
        held_back = dict(refused)  # image → why it is not pushed to this registry
        with _RegistryView(registry, None if sign else published) as view:
            for name in names:
                node = graph.nodes[name]
                tags = _tags(project, name)
                why = held_back.get(name) or _parent_held_back(node.needs, held_back)
                if why is not None:
                    held_back.setdefault(name, why)
                    outcome = PushOutcome(name, registry.name, registry.prefix, tags, error=why)
                else:
                    with traced.span(name, "push", image=name, registry=registry.name) as args:
                        outcome = _push_image(
                            engine_of(name),
                            name,
                            tags,
                            project.ref(name),
                            local[project.ref(name)],
                            registry,
                            view,
                            log=log_for(name),
                            sleep=sleep,
                            sign=sign,
                        )
                        args.update(
                            pushed=outcome.pushed,
                            unchanged=outcome.unchanged or None,
                            digest=outcome.digest,
                            error=outcome.error,
                        )
                    if not outcome.pushed:
                        held_back[name] = outcome.error
                outcomes.append(outcome)
                on_result(outcome)
            if project.multi_platform:
                for outcome in _join_platforms(
                    project, graph, names, outcomes, registry, engine_of, log_for, sign
                ):
                    outcomes.append(outcome)
                    on_result(outcome)
    return outcomes


def _tags(project: Project, key: str) -> tuple[str, ...]:
    """The tags `key` is pushed under: an image's own; a variant's, only those with its
    platform (the image's own name its manifest list)."""
    name, platform = split_key(key)
    refs = project.refs_for(key)
    if platform is not None:
        plain = set(project.refs(project.image(name)))
        refs = tuple(ref for ref in refs if ref not in plain)
    return tuple(dict.fromkeys(ref.rpartition(":")[2] for ref in refs))


def _join_platforms(
    project: Project,
    graph: FamilyGraph,
    names: Sequence[str],
    outcomes: Sequence[PushOutcome],
    registry: Registry,
    engine_of: Callable[[str], Engine],
    log_for: Callable[[str], LogSink],
    sign: Signer | None = None,
) -> list[PushOutcome]:
    """A manifest list per image all of whose variants were pushed to `registry`, under the
    image's own tags: what `docker pull` of the plain tag resolves per platform. An image
    with a variant not pushed gets none, and that is its push's failure; one with a
    variant not part of this run (`build --platform`) gets none either, said in its log:
    a list missing a platform would replace a whole one."""
    pushed = {o.image: o for o in outcomes if o.registry == registry.name and o.pushed}
    joined: list[PushOutcome] = []
    images = dict.fromkeys(split_key(name)[0] for name in names if split_key(name)[1])
    for image in images:
        spec = project.image(image)
        keys = [project.key(image, platform) for platform in project.platforms_of(spec)]
        tags = _tags(project, image)
        log = log_for(keys[0])
        left_out = [key for key in keys if key not in names]
        if left_out:  # the run was narrowed (build --platform): not a failure
            log(f"no manifest list for {image}: {', '.join(left_out)} not part of this run")
            continue
        missing = [key for key in keys if key not in pushed]
        if missing:
            why = f"no manifest list: {', '.join(missing)} not pushed"
            joined.append(PushOutcome(image, registry.name, registry.prefix, tags, error=why))
            log(why)
            continue
        instances = [f"{registry.prefix}/{image}@{pushed[key].digest}" for key in keys]
        digests: set[str] = set()
        try:
            for tag in tags:
                destination = registry.ref(image, tag)
                log(f"manifest list {destination} ← {', '.join(instances)}")
                digests.add(
                    engine_of(keys[0]).join_manifest(
                        instances, destination, tls_verify=registry.tls_verify, log=log
                    )
                )
            if sign is not None and len(digests) == 1:  # every engine: skopeo signs lists
                # The list and each platform's image, for the list's tags: pulling a tag,
                # a policy checks both against it.
                repository = f"{registry.prefix}/{image}"
                tls = registry.tls_verify and not on_loopback(repository)
                for key in keys:
                    instance = pushed[key].digest or ""
                    sign_in_registry(
                        repository, instance, list(tags), sign, tls_verify=tls, log=log
                    )
                list_digest = next(iter(digests))
                log(f"signing {repository}@{list_digest} with {sign.key}")
                sign_in_registry(
                    repository,
                    list_digest,
                    list(tags),
                    sign,
                    tls_verify=tls,
                    log=log,
                    manifest_list=True,
                )
        except EngineError as exc:
            why = f"manifest list {registry.ref(image, tags[0])} failed: {_last_line(exc)}"
            joined.append(PushOutcome(image, registry.name, registry.prefix, tags, error=why))
            continue
        platforms = {graph.nodes[key].platform or "": pushed[key].digest or "" for key in keys}
        joined.append(
            PushOutcome(
                image,
                registry.name,
                registry.prefix,
                tags,
                digest=sorted(digests)[0] if len(digests) == 1 else None,
                error="" if len(digests) == 1 else f"tags joined as {', '.join(sorted(digests))}",
                platforms=platforms,
                signed_by=sign.key if sign is not None and len(digests) == 1 else None,
            )
        )
    return joined


def _parent_held_back(needs: Sequence[str], held_back: Mapping[str, str]) -> str | None:
    return next((f"its parent {n} was not pushed" for n in needs if n in held_back), None)


def _push_image(
    engine: Engine,
    name: str,
    tags: tuple[str, ...],
    local: str,
    info: ImageInfo | None,
    registry: Registry,
    view: _RegistryView,
    *,
    log: LogSink,
    sleep: Callable[[float], None],
    sign: Signer | None = None,
) -> PushOutcome:
    """Every tag of the local image `local` (`info`: the engine's view of it) to one
    registry as `name`; the digest is the same for all tags."""
    repository = split_key(name)[0]
    if info is None:
        why = f"no local image {local}: build it first (lowbuild build {repository})"
        return PushOutcome(name, registry.name, registry.prefix, tags, error=why)
    fingerprint = info.labels.get(FINGERPRINT_LABEL)
    sbom = labelled_sbom(info.labels)
    served = view.serves(repository, info.id, tags, record_as=name)
    if served is not None:
        log(f"{registry.prefix}/{repository} already serves {local} as {served} under every tag")
        return PushOutcome(
            name,
            registry.name,
            registry.prefix,
            tags,
            digest=served,
            fingerprint=fingerprint,
            image_id=info.id,
            unchanged=True,
            sbom=sbom,
        )
    digests: set[str] = set()
    for position, tag in enumerate(tags):
        destination = registry.ref(repository, tag)
        log(f"push {local} → {destination}")
        # Each tag gets a signature naming it. The engine signs the first push itself; a
        # later one would replace that signature (podman writes the digest's whole list),
        # so skopeo adds the others to what the registry's lookaside already holds.
        own = sign if position == 0 else None
        try:
            digest = _push_with_retries(engine, local, destination, registry, log, sleep, own)
            if sign is not None and own is None:
                sign_in_registry(
                    f"{registry.prefix}/{repository}",
                    digest,
                    [tag],
                    sign,
                    tls_verify=registry.tls_verify and not on_loopback(destination),
                    log=log,
                )
        except EngineError as exc:
            why = f"push to {destination} failed: {_last_line(exc)}"
            log(f"not pushed: {redact(str(exc))}")
            return PushOutcome(
                name, registry.name, registry.prefix, tags, fingerprint=fingerprint, error=why
            )
        log(f"pushed {destination} as {digest}" + (f", signed by {sign.key}" if sign else ""))
        digests.add(digest)
    if len(digests) != 1:  # the same local image under every tag: one manifest
        why = f"the tags were pushed as different manifests: {', '.join(sorted(digests))}"
        return PushOutcome(name, registry.name, registry.prefix, tags, error=why)
    return PushOutcome(
        name,
        registry.name,
        registry.prefix,
        tags,
        digest=digests.pop(),
        fingerprint=fingerprint,
        image_id=info.id,
        sbom=sbom,
        signed_by=sign.key if sign is not None else None,
    )


class _RegistryView:
    """What one registry is known to serve: published.json's record of earlier pushes,
    checked against the registry itself (a manifest HEAD per tag, anonymous) before a
    push is skipped. Without a record, or when the registry cannot be asked (a login,
    down), it knows nothing and every image is pushed."""

    def __init__(self, registry: Registry, published: PublishedRecord | None) -> None:
        self.registry = registry
        self.published = published
        self._client: RegistryClient | None = None

    def __enter__(self) -> _RegistryView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()

    def serves(
        self, name: str, image_id: str, tags: Sequence[str], *, record_as: str | None = None
    ) -> str | None:
        """The digest the registry serves `name` at under every one of `tags`, when that
        is what an earlier push of the local image `image_id` recorded (under `record_as`,
        a variant's key; default `name`); else None."""
        if self.published is None:
            return None
        digest = self.published.recorded_digest(
            self.registry, record_as or name, image_id, tags, repository=name
        )
        if digest is None:
            return None
        if self._client is None:
            self._client = RegistryClient(self.registry)
        client = self._client
        if all(client.manifest_digest(name, tag) == digest for tag in tags):
            return digest
        return None


def _push_with_retries(
    engine: Engine,
    local: str,
    destination: str,
    registry: Registry,
    log: LogSink,
    sleep: Callable[[float], None],
    sign: Signer | None = None,
) -> str:
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return engine.push(
                local, destination, tls_verify=registry.tls_verify, log=log, sign=sign
            )
        except EngineError as exc:
            if attempt == PUSH_ATTEMPTS or not is_transient(exc):
                raise
            delay = PUSH_BACKOFF_S * 2 ** (attempt - 1)
            log(f"push failed ({_last_line(exc)}); trying again in {delay:g} s")
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def is_transient(error: EngineError) -> bool:
    """Whether a failed push is worth trying again (the registry down or restarting, a
    connection cut); a refusal (authentication, permission, a bad name) is not."""
    text = error.stderr
    if re.search(r"unauthorized|authentication required|denied|forbidden", text, re.I):
        return False
    return bool(_TRANSIENT.search(text))


def _last_line(error: EngineError) -> str:
    """The engine's own last words on a failure, redacted: the reason, without the log."""
    lines = [line.strip() for line in error.stderr.strip().splitlines() if line.strip()]
    return redact(lines[-1] if lines else f"exit {error.returncode}")


@dataclass
class PublishedRecord:
    """`.lowbuild/published.json`: for each image, where it was last pushed, by digest,
    and the fingerprint it was built from. Rewritten whole and atomically."""

    path: Path
    images: dict[str, dict[str, object]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> PublishedRecord:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        images = data.get("images") if isinstance(data, dict) else None
        return cls(path=path, images=dict(images) if isinstance(images, dict) else {})

    def add(self, outcomes: Sequence[PushOutcome]) -> None:
        for outcome in outcomes:
            if not outcome.pushed:
                continue
            entry = self.images.setdefault(outcome.image, {})
            registries = entry.get("registries")
            if not isinstance(registries, dict) or entry.get("fingerprint") != outcome.fingerprint:
                registries = {}  # a new build: what was pushed of the old one is history
            registries[outcome.registry] = {
                "ref": outcome.by_digest,
                "tags": [f"{outcome.prefix}/{outcome.repository}:{t}" for t in outcome.tags],
                "image_id": outcome.image_id,
            }
            entry.update(fingerprint=outcome.fingerprint, registries=registries)

    def pushed_digest(self, name: str, image_id: str) -> str:
        """The registry digest recorded for `name` pushed as the local image `image_id`, to
        any registry (an SBOM names a published parent by it); "" when none is."""
        entry = self.images.get(name)
        registries = entry.get("registries") if isinstance(entry, dict) else None
        for pushed in registries.values() if isinstance(registries, dict) else ():
            if isinstance(pushed, dict) and pushed.get("image_id") == image_id:
                ref = pushed.get("ref")
                if isinstance(ref, str) and "@" in ref:
                    return ref.partition("@")[2]
        return ""

    def recorded_digest(
        self,
        registry: Registry,
        name: str,
        image_id: str,
        tags: Sequence[str],
        *,
        repository: str | None = None,
    ) -> str | None:
        """The digest recorded for the local image `image_id` pushed as `name` to
        `registry` under (at least) `tags`; None when the record says otherwise."""
        entry = self.images.get(name)
        registries = entry.get("registries") if isinstance(entry, dict) else None
        pushed = registries.get(registry.name) if isinstance(registries, dict) else None
        if not isinstance(pushed, dict) or pushed.get("image_id") != image_id:
            return None
        ref, recorded_tags = pushed.get("ref"), pushed.get("tags")
        pushed_to, _, digest = ref.partition("@") if isinstance(ref, str) else ("", "", "")
        name = repository or name
        if pushed_to != f"{registry.prefix}/{name}" or not isinstance(recorded_tags, list):
            return None
        if not {registry.ref(name, tag) for tag in tags} <= set(recorded_tags):
            return None
        return digest or None

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"images": dict(sorted(self.images.items()))}
        write_atomically(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")
