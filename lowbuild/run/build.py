"""Build a planned family: assemble each context, build or commit it, label it, test it.

Each image runs as one piece of scheduler work. Its inputs are recomputed once
its needs are done (their new image IDs are inputs), so an image whose parent
was rebuilt to the very same ID is still recognised as up to date.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lowbuild.context.assemble import (
    ContextInventory,
    StagedContext,
    assemble_context,
    take_inventory,
)
from lowbuild.context.dockerfile import retarget_dockerfile
from lowbuild.engines.base import (
    BuildRequest,
    CommitRequest,
    CopyStep,
    Engine,
    ImageInfo,
    LogSink,
    RecipeRequest,
    ShellStep,
    WorkStep,
)
from lowbuild.engines.changes import label_change
from lowbuild.engines.commands import RUN_ID, run_scratch, stop_running_commands
from lowbuild.engines.detect import probed_version
from lowbuild.errors import EngineError, Interrupted, LowbuildError, VerificationError
from lowbuild.plan.fingerprint import (
    FINGERPRINT_LABEL,
    SBOM_PENDING,
    BuildInputs,
    fingerprint,
    fingerprint_labels,
    rebuild_reasons,
)
from lowbuild.plan.graph import Node
from lowbuild.plan.planner import Plan, PlannedImage, current_inputs
from lowbuild.redact import redact
from lowbuild.run.hosts import Handover, HandoverFailed, Watchdog
from lowbuild.run.placement import preferred_endpoints
from lowbuild.run.publish import PUBLISHED_FILE, PublishedRecord
from lowbuild.run.report import RunLogs
from lowbuild.run.sbom import (
    PACKAGE_LIST_TIMEOUT_S,
    SBOM_LABEL,
    ArtifactFact,
    BuildRun,
    ImageFacts,
    ImageRef,
    PackFact,
    provenance_path,
    provenance_statement,
    read_packages,
    render_sbom,
    sbom_digest,
    sbom_path,
)
from lowbuild.run.scheduler import LOCAL, EndpointLost, Event, Outcome, WorkResult, run_placed
from lowbuild.run.smoke import EMULATION_SLOWDOWN
from lowbuild.sources.cache import Cache, hash_file, write_atomically
from lowbuild.sources.registry import cache_ref
from lowbuild.spec.model import ImageSpec, Project, Registry
from lowbuild.spec.platforms import native_platform

STEP_IMAGES_ARE_THE_CACHE = frozenset({"podman", "docker"})
"""Engines whose layer cache is the images of each build's steps. After the SBOM step the
unlabelled image stays there, untagged, as the labelled one's parent: through it the
labelled image keeps its steps' images, which the next build of the image (a one-file
change) runs from; removing it took them along on podman, and docker refuses to remove
a parent anyway. `lowbuild prune` removing that build later removes them with it.
BuildKit (buildx) keeps its cache apart and buildah keeps none: there the unlabelled
image is removed at once."""

ARTIFACTS_LABEL = "lowbuild.artifacts"
# The project (lowbuild.yaml `name:`) an image was built for: with the namespace of its
# ref, what `lowbuild prune` tells this family's earlier builds from anyone else's by.
PROJECT_LABEL = "lowbuild.project"


def oci_labels(
    project: Project, spec: ImageSpec, *, base: str | None, key: str | None = None
) -> dict[str, str]:
    """The org.opencontainers.image.* labels lowbuild puts on every image (`key`: a
    platform's variant, whose ref it is built as carries the platform).

    `created` comes from SOURCE_DATE_EPOCH when set (reproducible), else now.
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    labels = {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.ref.name": project.ref(key or spec.name),
        "org.opencontainers.image.created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if spec.tags:
        labels["org.opencontainers.image.version"] = spec.tags[0]
    if base:
        labels["org.opencontainers.image.base.name"] = base
    return labels


@dataclass
class FamilyBuilder:
    """Everything a build of the family needs; `build(plan)` runs it."""

    project: Project
    engine: Engine
    cache: Cache
    stage_root: Path
    logs: RunLogs
    jobs: int
    fail_fast: bool = False
    on_event: Callable[[Event], None] = lambda event: None
    wrap_sink: Callable[[str, LogSink], LogSink] = lambda name, sink: sink
    on_build_start: Callable[[str], None] = lambda fingerprint: None
    """Told each image's fingerprint before its build starts (the run's record: a killed
    run's untagged images are found by it)."""
    cache_from: Registry | None = None
    """A registry cache: an image to build is first looked for there under its
    fingerprint tag (cache_ref) and pulled instead of built when it is found."""
    cache_to: Registry | None = None
    """Each image built is pushed there under its fingerprint tag, for the next runner."""
    fetch_inputs: Callable[[ImageSpec, LogSink], None] = lambda spec, log: None
    """Gets an image's artifacts into `cache`, for an image to build whose artifacts are
    not all there: the run fetches up front only what it plans to build, so this is an
    image planned "pull" that the cache no longer gives, or one a registry cache could
    not say it has (a login only the engine has: it tried to pull first)."""
    handover: Handover | None = None
    """Several endpoints (run/hosts.py): each image is built on one of them, its parents
    handed over to it first; `engine` is then only the first endpoint's."""
    sbom_dir: Path | None = None
    """The project's state directory: each image built gets its SBOM there (`sbom/`) and
    the SBOM's digest as a label (run/sbom.py), and a provenance statement
    (`provenance/`). None: neither (`build --no-sbom`)."""

    def __post_init__(self) -> None:
        self._ids: dict[str, str] = {}  # family image → ID, final or built by this run
        self._lock = threading.Lock()
        self._stopped = 0
        self._engine_versions: dict[str, str] = {}
        self._published = (
            PublishedRecord.read(self.sbom_dir / PUBLISHED_FILE) if self.sbom_dir else None
        )

    def build(self, plan: Plan) -> dict[str, Outcome]:
        # What the plan resolved stays valid for the run: bases, and the family images
        # that are not rebuilt. Images built by this run add their IDs as they finish.
        self._ids = dict(plan.known_ids)
        planned = plan.by_name()

        busy: dict[str, int] = {}  # endpoint → pieces of work running there

        def work(name: str, endpoint: str, cancel: threading.Event) -> WorkResult:
            with self._lock:
                busy[endpoint] = busy.get(endpoint, 0) + 1
            trace = self.logs.trace
            group = "build" if endpoint == LOCAL else f"{endpoint} build"
            try:
                with trace.slot(group), trace.span(name, "image", image=name) as args:
                    args.update(endpoint=endpoint or None, state="failed")
                    result = self._build_one(plan, planned[name], cancel, endpoint)
                    args.update(state=result.state, image_id=result.image_id)
                    args["reason"] = result.detail if result.state == "built" else None
                    return result
            except (EngineError, HandoverFailed) as exc:
                fleet = self.handover.fleet if self.handover else None
                lost = fleet.why_lost(endpoint) if fleet else None
                if fleet is None or lost is None:
                    raise
                fleet.give_up(endpoint, lost)  # what else runs there is stopped too
                lines = str(exc).strip().splitlines()
                raise EndpointLost(endpoint, f"{lost}; {lines[-1] if lines else exc}") from exc
            finally:
                with self._lock:
                    busy[endpoint] -= 1

        def running_on() -> set[str]:
            with self._lock:
                return {endpoint for endpoint, count in busy.items() if count}

        jobs = self.handover.fleet.jobs() if self.handover else {LOCAL: self.jobs}
        watching = Watchdog(self.handover.fleet, running_on) if self.handover else None
        try:
            with watching or contextlib.nullcontext():
                return run_placed(
                    order=[image.name for image in plan.images],
                    needs={image.name: image.needs for image in plan.images},
                    work=work,
                    endpoints=jobs,
                    prefer=lambda name: self._preferred(plan, planned[name]),
                    fail_fast=self.fail_fast,
                    on_event=self._record,
                    on_interrupt=self._stop_engine_commands,
                    weights=self._weights(plan),
                )
        except KeyboardInterrupt:
            # Only this run's containers, by its mark (RUN_ID): never those of a build
            # another process runs on the same host meanwhile.
            removed = 0
            for engine in self._engines():
                try:
                    leftovers = engine.run_containers(RUN_ID)
                    engine.remove_containers(leftovers)
                except LowbuildError:
                    if self.handover is None:
                        raise
                    continue  # an endpoint that is gone has no containers left to remove
                removed += len(leftovers)
            raise Interrupted(
                f"interrupted: stopped {self._stopped} running engine command(s), "
                f"removed {removed} container(s) of this run"
            ) from None

    def _weights(self, plan: Plan) -> dict[str, float]:
        """What each image is expected to take, for the order ready images start in: the
        time an earlier run took to build it (the median of those known for one never
        built here, 1 s when none is), nothing for one up to date."""
        from lowbuild.run.insight import earlier_build_times

        earlier = earlier_build_times(self.logs.directory)
        typical = statistics.median(earlier.values()) if earlier else 1.0
        return {
            image.name: earlier.get(image.name, typical) if image.action != "up-to-date" else 0.0
            for image in plan.images
        }

    def _engines(self) -> list[Engine]:
        return list(self.handover.fleet.engines.values()) if self.handover else [self.engine]

    def _engine_at(self, endpoint: str) -> Engine:
        return self.handover.fleet.engines[endpoint] if self.handover else self.engine

    def _preferred(self, plan: Plan, planned: PlannedImage) -> list[str]:
        """The endpoints holding the image as planned (up to date), then those holding
        what it is built from, its parent first: building there hands nothing over."""
        if self.handover is None:
            return []
        found: list[str] = []
        name, existing = planned.name, planned.existing_id
        if existing and planned.action == "up-to-date":
            found += self.handover.holding(name, existing)
        with self._lock:
            needs = [(need, self._ids.get(need)) for need in plan.graph.nodes[name].needs]
        held = [self.handover.holding(need, image_id) for need, image_id in needs if image_id]
        return found + [e for e in preferred_endpoints(held) if e not in found]

    def _stop_engine_commands(self) -> None:
        self._stopped = stop_running_commands()

    def _record(self, event: Event) -> None:
        if event.kind == "end" and event.outcome is not None:
            outcome = event.outcome
            if outcome.state == "failed":
                self.logs.mark_failed(event.name, outcome.detail)
            elif outcome.state == "blocked":
                self.logs.sink(event.name)(f"blocked: {outcome.blocked_by} failed")
        self.on_event(event)

    def _build_one(
        self, plan: Plan, planned: PlannedImage, cancel: threading.Event, endpoint: str
    ) -> WorkResult:
        try:
            return self._build_image(plan, planned, cancel, endpoint)
        except EngineError as exc:
            platform = plan.graph.nodes[planned.name].platform
            if platform is None or "exec format error" not in str(exc):
                raise
            raise EngineError(
                exc.command,
                exc.returncode,
                f"{exc.stderr.rstrip()}\n{platform} cannot run on this host (exec format "
                "error): register a qemu handler for it with binfmt_misc (`lowbuild doctor` "
                "says how)",
            ) from exc

    def _build_image(
        self, plan: Plan, planned: PlannedImage, cancel: threading.Event, endpoint: str
    ) -> WorkResult:
        name = planned.name
        engine, handover = self._engine_at(endpoint), self.handover
        if planned.action == "up-to-date":
            image_id = planned.existing_id or ""
            held = handover.holding(name, image_id) if handover else []
            return WorkResult(
                state="up-to-date", image_id=image_id, endpoint=held[0] if held else None
            )
        sink = self.wrap_sink(name, self.logs.sink(name))
        node = plan.graph.nodes[name]
        spec = node.spec
        if handover is not None:
            # Every ancestor, not only the parent: each endpoint then holds whole lines of
            # the family, so its own `plan` sees them up to date (a missing grandparent
            # would read as "parent rebuilt"). Their layers are already there with the
            # parent's: an ancestor costs a manifest and a config.
            sink(f"on endpoint {endpoint}")
            with self._lock:
                needed = [(a, self._ids[a]) for a in plan.graph.ancestors(name) if a in self._ids]
            with self.logs.trace.span("handover", "phase", parents=len(needed)):
                for need, need_id in needed:
                    handover.bring(need, need_id, endpoint, sink)
        inventory = planned.inventory or take_inventory(spec)
        inputs, reasons = planned.inputs, planned.reasons
        if inputs is None:  # a need was rebuilt: its new ID is an input, known only now
            inputs, reasons, existing = self._inputs_now(
                plan, node, inventory, ref=planned.ref, engine=engine
            )
            if not reasons and existing is not None:
                sink("up to date once its parents were built (same IDs)")
                with self._lock:
                    self._ids[name] = existing.id
                if handover is not None:
                    handover.record(name, endpoint, existing.id)
                return WorkResult(state="up-to-date", image_id=existing.id)
        if self.cache_from is not None:
            expected = fingerprint(inputs)
            with self.logs.trace.span("cache pull", "phase") as args:
                pulled = self._pull_from_cache(name, expected, self.cache_from, sink, engine)
                args["found"] = pulled is not None
            if pulled is not None:
                with self._lock:
                    self._ids[name] = pulled
                if handover is not None:
                    handover.record(name, endpoint, pulled)
                detail = f"from {cache_ref(self.cache_from, name, expected)}"
                return WorkResult(state="pulled", image_id=pulled, detail=detail)
        if any(not self.cache.contains(artifact.sha256) for artifact in spec.artifacts):
            sink("not from the registry cache: fetching its inputs to build it")
            with self.logs.trace.span("fetch", "phase"):
                self.fetch_inputs(spec, sink)
        sink(f"building {planned.ref}: {'; '.join(reasons)}")
        with self.logs.trace.span("stage", "phase"):
            staged = assemble_context(
                spec, cache=self.cache, stage_root=self.stage_root, inventory=inventory
            )
        sink(f"context staged at {staged.path} ({staged.digest})")
        labels = self._labels(node, staged, inputs)
        refs = self.project.refs_for(name)
        if cancel.is_set():
            raise Interrupted(f"{name}: interrupted before building")
        self.on_build_start(labels[FINGERPRINT_LABEL])
        started = datetime.now(UTC)
        trace = self.logs.trace
        if spec.kind == "commit":
            with trace.span("commit", "phase"):
                image_id = self._commit_recipe(node, staged, refs, labels, sink, engine)
        else:
            # The staged copy, never the source: what was checked and fingerprinted (a
            # variant's: pointed at its platform's parent and bases, beside the context).
            dockerfile = staged.path / spec.dockerfile
            if node.platform is not None:
                dockerfile = self._variant_dockerfile(node, dockerfile, sink)
            request = BuildRequest(
                context=staged.path,
                dockerfile=dockerfile,
                tags=refs,
                build_args=dict(spec.args),
                labels=labels,
                network=spec.engine_network,
                platform=node.platform,
            )
            with trace.span("engine build", "phase", engine=engine.name):
                image_id = engine.build(request, log=sink)
        if self.sbom_dir is not None:
            with trace.span("sbom", "phase"):
                image_id = self._attach_sbom(
                    node, inputs, staged, refs, labels, image_id, engine, sink, started
                )
        sink(f"built {image_id}")
        with self._lock:
            self._ids[name] = image_id
        digest = ""
        if handover is not None:
            handover.record(name, endpoint, image_id)
            if handover.fleet.registry is not None:  # several endpoints: hand it over
                with trace.span("hand over", "phase"):
                    digest = handover.publish(name, endpoint, image_id, sink)
        handed_to = handover.fleet.registry if handover is not None else None
        if self.cache_to is not None and self.cache_to != handed_to:  # not the same push twice
            with trace.span("cache push", "phase"):
                self._push_to_cache(name, labels[FINGERPRINT_LABEL], self.cache_to, sink, engine)
        detail = "; ".join(reasons)
        return WorkResult(state="built", image_id=image_id, detail=detail, digest=digest)

    def _attach_sbom(
        self,
        node: Node,
        inputs: BuildInputs,
        staged: StagedContext,
        refs: Sequence[str],
        labels: Mapping[str, str],
        built: str,
        engine: Engine,
        sink: LogSink,
        started: datetime,
    ) -> str:
        """Write the SBOM of the image just built (its OS packages asked of the image
        itself), label the image with the SBOM's digest (a new image ID: the refs move to
        it, the unlabelled one is removed), then write its provenance; return the new ID."""
        assert self.sbom_dir is not None
        spec = node.spec
        foreign = node.platform is not None and node.platform != native_platform()
        timeout = PACKAGE_LIST_TIMEOUT_S * (EMULATION_SLOWDOWN if foreign else 1)
        with self.logs.trace.span("list packages", "phase"):
            listing = read_packages(engine, refs[0], timeout=timeout)
        sink(f"sbom: {listing.summary()}")
        facts = ImageFacts(
            key=node.name,
            name=spec.name,
            ref=refs[0],
            version=spec.tags[0] if spec.tags else self.project.tag,
            project=self.project.name,
            fingerprint=labels[FINGERPRINT_LABEL],
            created=labels.get("org.opencontainers.image.created", ""),
            platform=node.platform or "",
            artifacts=tuple(
                ArtifactFact(file=a.file, sha256=a.sha256, urls=a.urls) for a in spec.artifacts
            ),
            packs=tuple(
                PackFact(into=p.into, source=p.source, sha256=hash_file(staged.path / p.into))
                for p in spec.packs
            ),
            parents=(
                *(
                    ImageRef(
                        ref=self.project.ref(need),
                        image_id=need_id,
                        digest=self._published.pushed_digest(need, need_id)
                        if self._published
                        else "",
                    )
                    for need, need_id in inputs.family
                ),
                *(ImageRef(ref=ref, image_id=i, family=False) for ref, i in inputs.external),
            ),
            packages=listing,
        )
        document = render_sbom(facts)
        digest = sbom_digest(document)
        with (
            self.logs.trace.span("label", "phase"),
            tempfile.TemporaryDirectory(prefix="sbom-label-", dir=run_scratch()) as scratch,
        ):
            dockerfile = Path(scratch) / "Dockerfile"
            dockerfile.write_text(f'FROM {refs[0]}\nLABEL {SBOM_LABEL}="{digest}"\n')
            request = BuildRequest(
                context=Path(scratch),
                dockerfile=dockerfile,
                tags=refs,
                build_args={},
                labels={},
                network="none",
                platform=node.platform,
            )
            image_id = engine.build(request, log=sink)
        if image_id != built and engine.name not in STEP_IMAGES_ARE_THE_CACHE:
            with contextlib.suppress(EngineError):
                engine.remove_image(built)
        run = BuildRun(
            engine=engine.name,
            engine_version=self._engine_version(engine),
            started=started,
            finished=datetime.now(UTC),
            run_id=RUN_ID,
            recipe_kind=spec.kind,
            recipe_file=spec.dockerfile if spec.kind == "dockerfile" else "image.yaml",
            args=dict(spec.args),
            context_digest=staged.digest,
            image_id=image_id,
            refs=refs,
        )
        statement = provenance_statement(facts, run, sbom=digest)
        try:
            for path, text in (
                (sbom_path(self.sbom_dir, node.name), document.decode("utf-8")),
                (
                    provenance_path(self.sbom_dir, node.name),
                    json.dumps(statement, indent=2, sort_keys=True) + "\n",
                ),
            ):
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, text)
        except OSError as exc:
            raise LowbuildError(f"{node.name}: could not write its SBOM: {exc}") from exc
        sink(f"sbom: {sbom_path(self.sbom_dir, node.name)} ({digest}), labelled {SBOM_LABEL}")
        return image_id

    def _engine_version(self, engine: Engine) -> str:
        with self._lock:
            known = self._engine_versions.get(engine.name)
        if known is None:
            known = probed_version(engine)  # asked once already when it was chosen
        if known is None:
            try:
                known = engine.version()
            except EngineError:
                known = "unknown"
            with self._lock:
                self._engine_versions[engine.name] = known
        return known

    def _variant_dockerfile(self, node: Node, staged: Path, sink: LogSink) -> Path:
        """The staged Dockerfile pointed at `node`'s platform's images (its `retarget`),
        written beside the staged context (which stays as checked), by content."""
        text = staged.read_text(encoding="utf-8")
        spec = node.spec
        variant = retarget_dockerfile(
            text, path=spec.dockerfile_path, build_args=dict(spec.args), targets=dict(node.retarget)
        )
        digest = hashlib.sha256(variant.encode()).hexdigest()[:20]
        target = self.stage_root / "platform-dockerfiles" / f"{node.name}-{digest}.Dockerfile"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            # Beside the staged contexts, as `*.tmp`: what a killed run leaves half written
            # there is removed by the next run (run/session.py).
            part = self.stage_root / f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            part.write_text(variant, encoding="utf-8")
            part.replace(target)
        for before, after in node.retarget:
            sink(f"for {node.platform}: {before} → {after}")
        return target

    def _pull_from_cache(
        self, key: str, expected: str, registry: Registry, sink: LogSink, engine: Engine
    ) -> str | None:
        """The image pulled from the registry cache and tagged as if built, or None when
        the cache does not have it (or cannot be reached: then it is built). A pulled
        image whose fingerprint label is not `expected` is a VerificationError, and it
        gets none of the family's tags."""
        spec = self.project.image(key)
        ref = cache_ref(registry, spec.name, expected)
        sink(f"looking for {ref} in the registry cache")
        try:
            image_id = engine.pull(ref, tls_verify=registry.tls_verify, log=sink)
        except EngineError as exc:
            sink(f"registry cache not usable, building instead: {redact(str(exc))}")
            return None
        if image_id is None:
            sink("not in the registry cache: building")
            return None
        info = engine.inspect_image(ref)
        found = info.labels.get(FINGERPRINT_LABEL) if info else None
        if found != expected:
            with contextlib.suppress(EngineError):
                # Not forced: when the image also carries other names (a family image
                # pushed under the wrong tag), only this name goes.
                engine.remove_image(ref)
            raise VerificationError(
                f"{spec.name}: refused {ref} from the registry cache, nothing tagged: its "
                f"fingerprint is {found}, expected {expected} (the pulled copy was removed)"
            )
        for local in self.project.refs_for(key):
            engine.tag(ref, local)
        sink(f"pulled {ref} ({image_id}) instead of building")
        return image_id

    def _push_to_cache(
        self, name: str, built_from: str, registry: Registry, sink: LogSink, engine: Engine
    ) -> None:
        """Push a built image under its fingerprint tag; a failure is said, not fatal."""
        ref = cache_ref(registry, name, built_from)
        try:
            digest = engine.push(
                self.project.ref(name), ref, tls_verify=registry.tls_verify, log=sink
            )
        except EngineError as exc:
            sink(f"warning: not pushed to the registry cache: {redact(str(exc))}")
            return
        sink(f"pushed to the registry cache as {ref} ({digest})")

    def _inputs_now(
        self, plan: Plan, node: Node, inventory: ContextInventory, *, ref: str, engine: Engine
    ) -> tuple[BuildInputs, tuple[str, ...], ImageInfo | None]:
        """`node`'s inputs with its needs' IDs as this run left them, the reasons to build
        it (none: the existing image already has those inputs), and that image."""
        with self._lock:
            family_ids = {need: self._ids[need] for need in node.needs}
        inputs = current_inputs(
            node,
            engine=engine,
            family_ids=family_ids,
            external_ids=plan.external_ids,
            inventory=inventory,
        )
        existing = engine.inspect_image(ref)
        return inputs, rebuild_reasons(existing.labels if existing else None, inputs), existing

    def _labels(self, node: Node, staged: StagedContext, inputs: BuildInputs) -> dict[str, str]:
        """The image's labels: the spec's, the OCI ones, its project, artifacts and inputs."""
        spec = node.spec
        parent_ref = self.project.ref(node.parent) if node.parent else node.base
        artifacts = {file: f"sha256:{d}" for file, d in sorted(staged.artifact_digests.items())}
        return {
            **dict(spec.labels),
            **oci_labels(self.project, spec, base=parent_ref, key=node.name),
            PROJECT_LABEL: self.project.name,
            ARTIFACTS_LABEL: json.dumps(artifacts, separators=(",", ":")),
            **fingerprint_labels(inputs),
            # Never the parent's: its own once its SBOM is written (_attach_sbom).
            SBOM_LABEL: SBOM_PENDING if self.sbom_dir is not None else "",
        }

    def _commit_recipe(
        self,
        node: Node,
        staged: StagedContext,
        refs: Sequence[str],
        labels: Mapping[str, str],
        sink: LogSink,
        engine: Engine,
    ) -> str:
        """A commit recipe: the engine runs the steps in a container from the base (a family
        image's ref, or an external one) and commits it with the labels as changes."""
        spec = node.spec
        recipe = spec.commit
        assert recipe is not None  # the spec loader guarantees it for kind: commit
        base = dict(node.retarget).get(recipe.base, recipe.base)  # a variant's: its platform's
        if base in self.project.image_names():
            base = self.project.ref(base)
        steps: list[WorkStep] = []
        for step in recipe.steps:
            if step.run is not None:
                steps.append(ShellStep(command=step.run))
            else:
                assert step.copy is not None and step.dest is not None
                steps.append(CopyStep(source=staged.path / step.copy, dest=step.dest))
        changes = [
            *recipe.changes,
            *(label_change(key, value) for key, value in labels.items()),
        ]
        commit = CommitRequest(
            ref=refs[0], author=recipe.author, message=recipe.message, changes=changes
        )
        request = RecipeRequest(
            base=base,
            steps=steps,
            commit=commit,
            network=spec.engine_network,
            platform=node.platform,
        )
        image_id = engine.commit_steps(request, log=sink)
        for ref in refs[1:]:
            engine.tag(refs[0], ref)
        return image_id
