"""The commands' workflows: load → plan → fetch → build → test → report.

The CLI parses options into a request and calls one function here; everything a
command does lives here so that it can be tested and reused without the CLI.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from lowbuild.errors import (
    EXIT_FAILED,
    EngineUnavailable,
    LowbuildError,
    SpecError,
    UsageError,
    VerificationError,
)
from lowbuild.plan.graph import FamilyGraph, build_graph, select
from lowbuild.redact import redact
from lowbuild.sources.cache import Cache, admit_declared, default_cache_root
from lowbuild.spec.load import load_project
from lowbuild.spec.model import ImageSpec, Project, Registry
from lowbuild.spec.platforms import platform_problem, split_key

if TYPE_CHECKING:
    # Imported where used instead: each command pays only for what it runs (a warm
    # `lowbuild fetch` needs neither the engines, the builder, nor an HTTP client).
    from lowbuild.engines.base import Engine, LogSink, Signer
    from lowbuild.engines.endpoints import Hosts
    from lowbuild.plan.planner import CacheLookup, PlannedImage
    from lowbuild.run.hosts import Fleet, Handover
    from lowbuild.run.publish import PushOutcome
    from lowbuild.run.report import RunLogs
    from lowbuild.run.scheduler import Outcome
    from lowbuild.run.session import RunJournal
    from lowbuild.run.smoke import TestOutcome
    from lowbuild.sources.fetch import FetchOutcome
    from lowbuild.sources.registry import RegistryClient

STATE_DIR = ".lowbuild"  # beside lowbuild.yaml: staged contexts and run logs
PROBES_FILE = "engine-probes.json"  # engines/detect.py ProbeMemo: probes that passed
# The run log of a build's downloads: a name no image can have (image names start
# with a letter or digit).
FETCH_LOG = "_fetch"


def default_jobs() -> int:
    """Builds mix CPU (compiles) and waiting (package downloads): one per core, at least 2."""
    return max(2, os.cpu_count() or 2)


def default_test_jobs() -> int:
    """Smoke tests mostly wait for a service to come up: twice the cores, at least 4."""
    return max(4, 2 * (os.cpu_count() or 2))


@dataclass(frozen=True)
class Selection:
    """What the user asked for: project file, images, engine."""

    project_file: Path | None = None
    names: tuple[str, ...] = ()
    with_deps: bool = True
    engine: str | None = None
    overrides: tuple[str, ...] = ()  # --set IMAGE.FIELD[.KEY]=VALUE (spec/overrides.py)
    hosts_file: Path | None = None  # --hosts (else $LOWBUILD_HOSTS): engines/endpoints.py
    endpoints: tuple[str, ...] = ()  # --endpoint NAME=ENGINE+URL[,jobs=N]
    # Whether the command works over endpoints (plan, build): the others use one engine
    # even when $LOWBUILD_HOSTS is set.
    over_hosts: bool = False
    platforms: tuple[str, ...] = ()  # --platform: only these variants (plan, build)


@dataclass(frozen=True)
class Resolved:
    """A selection made concrete: its project, family graph, engine and image names."""

    project: Project
    graph: FamilyGraph
    engine: Engine  # with hosts: the first endpoint's
    named: tuple[str, ...]  # the images named (all when none were), checked, in build order
    hosts: Hosts | None = None  # the endpoints to split the family over (None: one engine)


def resolve(selection: Selection) -> Resolved:
    """Load the spec, build the graph (parents checked), check the names and pick the
    engine (flag, $LOWBUILD_ENGINE, lowbuild.yaml, then the first that works)."""
    from lowbuild.engines.detect import ENGINE_ENV, ProbeMemo, select_engine
    from lowbuild.engines.endpoints import endpoint_engine, find_hosts

    project = load_project(selection.project_file)
    if selection.overrides:
        from lowbuild.spec.overrides import apply_overrides

        project = apply_overrides(project, selection.overrides)
    graph = build_graph(project)
    for platform in selection.platforms:
        problem = platform_problem(platform)
        if problem is not None:
            raise UsageError(f"--platform: {problem}")
    # Unknown names and platforms: UsageError.
    named = select(graph, selection.names, with_deps=False, platforms=selection.platforms)
    hosts = find_hosts(selection.hosts_file, selection.endpoints) if selection.over_hosts else None
    if hosts is not None:
        if selection.engine:
            raise UsageError("--engine picks one engine; with endpoints each names its own")
        first = endpoint_engine(hosts.endpoints[0])
        return Resolved(project=project, graph=graph, engine=first, named=named, hosts=hosts)
    engine_name = selection.engine or os.environ.get(ENGINE_ENV) or project.engine
    from lowbuild.run.session import make_state_dir

    state_dir = project.root / STATE_DIR
    try:
        make_state_dir(state_dir)  # what a run keeps: its memo of engine probes too
        memo: ProbeMemo | None = ProbeMemo(state_dir / PROBES_FILE)
    except OSError:  # a read-only project: every run probes
        memo = None
    engine = select_engine(engine_name, memo=memo)
    return Resolved(project=project, graph=graph, engine=engine, named=named)


def run_graph(project_file: Path | None, *, graph_format: str, out: Console) -> int:
    """`lowbuild graph`: the family as a dot or mermaid graph."""
    from lowbuild.plan.graph import render_graph

    graph = build_graph(load_project(project_file))
    if graph_format == "html":
        from lowbuild.run.pages import GraphNode, render_graph_page

        nodes = {
            base: GraphNode(base, base, "base", (), f"{base}: external base")
            for node in graph.nodes.values()
            for base in node.external
        }
        for node in graph.nodes.values():
            parents = node.needs + tuple(b for b in node.external if b not in node.needs)
            nodes[node.name] = GraphNode(node.name, node.name, "image", parents)
        title = f"{graph.project.root.name}: the family"
        out.file.write(render_graph_page(title, list(nodes.values())))
        return 0
    text = render_graph(graph, graph_format=graph_format)
    out.file.write(text + "\n")
    return 0


def run_doctor(
    engine: str | None,
    *,
    as_json: bool,
    out: Console,
    err: Console | None = None,
    project_file: Path | None = None,
    hosts_file: Path | None = None,
    endpoints: tuple[str, ...] = (),
) -> int:
    """`lowbuild doctor`: examine every engine (or the named one) and print the reports;
    EngineUnavailable (exit 3) when none works, or not the named one. With `as_json`,
    the reports are stdout's one JSON document: the failure is said on `err` and
    returned as the exit code instead (no second JSON document, the error's, after it).

    Inside a project (or with `project_file`), each working engine is also asked for the
    family's external base images: one missing is reported on its own, not as the
    engine's failure, and does not change the exit code."""
    from lowbuild.doctor import examine_engines, require_working
    from lowbuild.engines.base import ENGINE_NAMES
    from lowbuild.engines.detect import known_name
    from lowbuild.engines.endpoints import find_hosts
    from lowbuild.run.report import doctor_bases_table, doctor_emulation_table, doctor_table
    from lowbuild.spec.load import nearest_project_file

    hosts = find_hosts(hosts_file, endpoints)
    if hosts is not None and engine:
        raise UsageError("--engine picks one engine; with endpoints each names its own")
    bases = None
    project = None
    found = project_file or nearest_project_file()  # walked up once, loaded from there
    if found is not None:
        try:
            project = load_project(found)
            bases = build_graph(project).external_images()
        except SpecError as exc:
            if project_file is not None:  # asked for: its mistakes are the answer
                raise
            # Found by walking up: the engines are still worth examining.
            (err or Console(stderr=True)).print(
                f"note: the project here does not load, so its base images are not checked:\n{exc}",
                highlight=False,
                markup=False,
            )
    if hosts is not None:
        return _doctor_hosts(hosts, project, bases, as_json=as_json, out=out, err=err)
    reports = examine_engines([known_name(engine)] if engine else ENGINE_NAMES, bases=bases)
    if project is not None and project.multi_platform:
        from lowbuild.doctor.checks import emulation_checks

        platforms = [p for spec in project.images for p in project.platforms_of(spec)]
        emulation = tuple(emulation_checks(platforms, rootless=os.geteuid() != 0))
        reports = [dataclasses.replace(report, emulation=emulation) for report in reports]
    if not as_json:
        out.print(doctor_table(reports))
        if bases:
            out.print(doctor_bases_table(reports, bases))
        if reports and reports[0].emulation:
            out.print(doctor_emulation_table(reports[0].emulation))
        require_working(reports, asked=engine)
        return 0
    out.file.write(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
    try:
        require_working(reports, asked=engine)
    except EngineUnavailable as exc:
        (err or Console(stderr=True)).print(f"error: {exc}", highlight=False, markup=False)
        return exc.exit_code
    return 0


def _doctor_hosts(
    hosts: Hosts,
    project: Project | None,
    bases: Mapping[str, Sequence[str]] | None,
    *,
    as_json: bool,
    out: Console,
    err: Console | None,
) -> int:
    """`lowbuild doctor --hosts`: every endpoint, at once; exit 3 unless all work."""
    from concurrent.futures import ThreadPoolExecutor

    from lowbuild.doctor import read_host_facts
    from lowbuild.doctor.probes import examine_endpoint
    from lowbuild.run.publish import chosen_registries
    from lowbuild.run.report import doctor_bases_table, doctor_table

    registry = None
    if hosts.registry is not None:
        if project is not None:
            [registry] = chosen_registries(project, [hosts.registry], tls_verify=hosts.tls_verify)
        else:
            prefix = hosts.registry.rstrip("/")
            registry = Registry(name=prefix, prefix=prefix, tls_verify=hosts.tls_verify)
    facts = read_host_facts()
    with ThreadPoolExecutor(max_workers=min(8, len(hosts.endpoints))) as pool:
        reports = list(
            pool.map(
                lambda e: examine_endpoint(e, facts=facts, bases=bases, registry=registry),
                hosts.endpoints,
            )
        )
    broken = [r.title for r in reports if not r.ok]
    if as_json:
        out.file.write(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
    else:
        out.print(doctor_table(reports))
        if bases:
            out.print(doctor_bases_table(reports, bases))
        if registry is None and len(hosts.endpoints) > 1:
            (err or Console(stderr=True)).print(
                "note: no `registry:` in the hosts file, so whether the endpoints reach the "
                "handover registry was not checked",
                highlight=False,
                markup=False,
            )
    if broken:
        (err or Console(stderr=True)).print(
            f"error: {len(broken)} of {len(reports)} endpoint(s) do not work: " + ", ".join(broken),
            highlight=False,
            markup=False,
        )
        return EngineUnavailable.exit_code
    return 0


def run_plan(
    selection: Selection,
    *,
    console: Console,
    as_json: bool,
    err: Console,
    cache: RegistryCache | None = None,
    offline: bool = False,
) -> int:
    """`lowbuild plan`: print what would be built, or pulled from a registry cache
    (`cache.pull_from`; none `offline`), and why; builds nothing."""
    from lowbuild.plan.planner import make_plan
    from lowbuild.run.report import plan_table

    resolved = resolve(selection)
    cache_from, _ = _registry_cache(resolved.project, cache or RegistryCache(), offline=offline)
    fleet = _fleet(resolved, None, err=err, build=False) if resolved.hosts is not None else None
    with _cache_client(cache_from, err=err) as client:
        plan = make_plan(
            resolved.project,
            resolved.graph,
            next(iter(fleet.engines.values())) if fleet is not None else resolved.engine,
            names=selection.names,
            with_deps=selection.with_deps,
            platforms=selection.platforms,
            cache_lookup=_lookup(client),
            missing_bases_ok=True,  # a fresh host gets the whole plan, missing bases named
            stores=fleet.engines if fleet is not None else None,
        )
    placement: dict[str, str] | None = None
    if fleet is not None:
        from lowbuild.run.hosts import intended_placement

        placement = intended_placement(plan, fleet.jobs(), plan.held)
    if as_json:
        records = plan.to_records()
        document: dict[str, object] = {"engine": plan.engine, "images": records}
        if fleet is not None and placement is not None:
            document["endpoints"] = list(fleet.engines)  # those that answered
            for record in records:
                record["endpoint"] = placement[record["image"]]
        # Straight to the console's file: rich's print_json highlights every token, which
        # took longer than the planning itself for a family of hundreds of images.
        console.file.write(json.dumps(document, indent=2) + "\n")
    else:
        console.print(plan_table(plan, placement=placement))
    return 0


def _fleet(
    resolved: Resolved, registry: Registry | None, *, err: Console, build: bool = True
) -> Fleet:
    """The run's endpoints, each asked for its version first: one that does not answer
    is left out, said on `err` (EngineUnavailable when none answers). To `build` on
    several, the handover `registry` is needed."""
    from concurrent.futures import ThreadPoolExecutor

    from lowbuild.engines.endpoints import Hosts
    from lowbuild.run.hosts import Fleet

    hosts = resolved.hosts
    assert hosts is not None
    fleet = Fleet.connect(hosts, registry, handover=False)
    with ThreadPoolExecutor(max_workers=min(8, len(hosts.endpoints))) as pool:
        lost = dict(zip(fleet.engines, pool.map(fleet.why_lost, fleet.engines), strict=True))
    answering = tuple(e for e in hosts.endpoints if lost[e.name] is None)
    for endpoint in hosts.endpoints:
        if lost[endpoint.name] is not None:
            err.print(
                f"warning: endpoint {endpoint.describe()} left out: {lost[endpoint.name]}",
                highlight=False,
                markup=False,
            )
    if not answering:
        raise EngineUnavailable("no endpoint answers; run `lowbuild doctor --hosts …` to see why")
    kept = Hosts(
        answering, registry=hosts.registry, tls_verify=hosts.tls_verify, source=hosts.source
    )
    return Fleet.connect(kept, registry, handover=build)


@dataclass(frozen=True)
class RegistryCache:
    """--cache-from / --cache-to as given (a registry name or prefix; None: lowbuild.yaml's
    `cache:`), and whether a prefix given there is verified with TLS."""

    pull_from: str | None = None
    push_to: str | None = None
    tls_verify: bool = True


@dataclass(frozen=True)
class BuildOptions:
    jobs: int
    fail_fast: bool = False
    test: bool = False
    test_jobs: int = 4  # smoke tests at once (`-j` when given, else default_test_jobs())
    offline: bool = False
    cache_dir: Path | None = None
    as_json: bool = False
    wait: bool = True  # for the project lock; False: refuse at once when it is held
    push: PushTargets | None = None  # --push: where to (None: no push)
    cache: RegistryCache = field(default_factory=RegistryCache)  # --cache-from/--cache-to
    progress: str = "auto"  # --progress: auto, tty, plain or quiet (report.LiveBoard)
    sbom: bool = True  # --no-sbom: no SBOM, SBOM label nor provenance for what is built


@dataclass(frozen=True)
class PushTargets:
    """`--to` as given (registry names or prefixes; none: lowbuild.yaml's registries),
    and whether a prefix given there is verified with TLS."""

    to: tuple[str, ...] = ()
    tls_verify: bool = True
    force: bool = False  # push even what the registry serves as published.json recorded
    sign: Signer | None = None  # --sign: sign each pushed manifest by digest


@contextmanager
def project_session(
    project: Project, *, engine: Engine | None, wait: bool, err: Console
) -> Iterator[RunJournal | None]:
    """For the commands that build or stage (build, export bake, bundle export): hold the
    project lock, remove what killed runs left, and record this run (run/session.py);
    yields its journal (None without an engine)."""
    from lowbuild.engines.detect import engine_by_name
    from lowbuild.run import session

    def engine_for(name: str) -> Engine:
        return engine if engine is not None and engine.name == name else engine_by_name(name)

    with session.project_session(
        project.root / STATE_DIR,
        engine=engine.name if engine is not None else None,
        wait=wait,
        notify=lambda line: err.print(line, highlight=False, markup=False),
        engine_for=engine_for,
    ) as journal:
        yield journal


def run_build(
    selection: Selection, options: BuildOptions, *, console: Console, err: Console
) -> int:
    """`lowbuild build`: under the project lock, plan, fetch what is missing, build in
    order, optionally test, report."""
    resolved = resolve(selection)
    if options.progress == "quiet":  # only the summary: the chatter goes nowhere
        err = Console(file=io.StringIO())
    with project_session(
        resolved.project, engine=resolved.engine, wait=options.wait, err=err
    ) as journal:
        assert journal is not None  # an engine was given
        return _build(selection, resolved, options, journal, console=console, err=err)


def run_clean(project_file: Path | None, *, wait: bool, err: Console) -> int:
    """`lowbuild clean`: remove what killed lowbuild runs of the project left behind."""
    from lowbuild.engines.detect import engine_by_name
    from lowbuild.run.session import clean_dead_runs, describe, project_lock

    project = load_project(project_file)
    state_dir = project.root / STATE_DIR

    def notify(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    with project_lock(state_dir, wait=wait, notify=notify):
        cleaned = clean_dead_runs(state_dir, engine_for=engine_by_name)
    for item in cleaned:
        notify(describe(item))
    if not cleaned:
        notify("nothing to clean: no killed lowbuild run left anything in this project")
    return 0


def run_images(selection: Selection, *, as_json: bool, out: Console) -> int:
    """`lowbuild images`: each image of the family as the engine stores it now."""
    from lowbuild.run.images import family_images
    from lowbuild.run.report import images_table

    resolved = resolve(selection)
    rows = family_images(resolved.project, resolved.engine)
    if selection.names:
        wanted = set(resolved.named)
        rows = [row for row in rows if row.name in wanted]
    if as_json:
        document = {"engine": resolved.engine.name, "images": [row.to_json() for row in rows]}
        out.file.write(json.dumps(document, indent=2) + "\n")
    else:
        out.print(images_table(rows))
    return 0


def run_prune(
    selection: Selection,
    *,
    dry_run: bool,
    as_json: bool,
    wait: bool,
    out: Console,
    err: Console,
) -> int:
    """`lowbuild prune`: remove the family's earlier builds, under the project lock (a
    build of this project is never pruned mid-way). Exit 1 when the engine kept one."""
    from lowbuild.run.images import prune_family
    from lowbuild.run.report import human_bytes, prune_table
    from lowbuild.run.session import project_lock

    resolved = resolve(selection)
    project = resolved.project

    def notify(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    with project_lock(project.root / STATE_DIR, wait=wait, notify=notify):
        result = prune_family(project, resolved.engine, dry_run=dry_run, notify=notify)
    if as_json:
        out.file.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        out.print(prune_table(result))
        if result.dry_run:
            notify(f"dry run: nothing removed; {len(result.removed)} earlier builds would go")
        elif result.freed is not None:
            notify(
                f"freed {human_bytes(result.freed)} ({resolved.engine.name}'s image storage: "
                f"{human_bytes(result.store_before)} before, {human_bytes(result.store_after)} "
                "after)"
            )
        else:
            notify("nothing to prune: no earlier build of this family is left")
    return EXIT_FAILED if any(item.kept.startswith("engine:") for item in result.kept) else 0


def _build(
    selection: Selection,
    resolved: Resolved,
    options: BuildOptions,
    journal: RunJournal,
    *,
    console: Console,
    err: Console,
) -> int:
    from lowbuild.plan.planner import make_plan
    from lowbuild.run.build import FamilyBuilder
    from lowbuild.run.insight import run_record
    from lowbuild.run.report import LiveBoard, RunLogs, run_exit_code
    from lowbuild.run.scheduler import FINISHED_OK, Event
    from lowbuild.run.smoke import SmokeTester
    from lowbuild.run.trace import Trace

    project, engine = resolved.project, resolved.engine
    trace = Trace("lowbuild build")
    registries = _push_registries(project, options.push)  # a bad --to: before any build
    cache_from, cache_to = _registry_cache(project, options.cache, offline=options.offline)
    handover: Handover | None = None
    fleet: Fleet | None = None
    if resolved.hosts is not None:
        fleet = _fleet(resolved, _handover_registry(resolved, cache_to, options), err=err)
        engine = next(iter(fleet.engines.values()))  # the first that answered
    with _cache_client(cache_from, err=err) as client, trace.span("plan", "run") as planned:
        plan = make_plan(
            project,
            resolved.graph,
            engine,
            names=selection.names,
            with_deps=selection.with_deps,
            platforms=selection.platforms,
            cache_lookup=_lookup(client),
            stores=fleet.engines if fleet is not None else None,
        )
        planned["images"] = len(plan.images)
    if fleet is not None:
        from lowbuild.run.hosts import Handover

        handover = Handover(project, fleet, {name: dict(h) for name, h in plan.held.items()})
    if client is not None and client.failure and "pull" not in plan.actions():
        cache_from = None  # unreachable: the builds do not ask it again, one by one
    to_build = [image for image in plan.images if image.action == "build"]
    if fleet is None:  # endpoints emulate (or not) on their own hosts
        _warn_without_emulation(resolved.graph, [image.name for image in plan.images], err)
    # A cache that could not answer every question (a login it wants from the engine):
    # each build asks the engine to pull first, and fetches inputs only on a miss.
    fetch_late = cache_from is not None and client is not None and client.unsure
    cache = Cache(default_cache_root(options.cache_dir))
    state_dir = project.root / STATE_DIR
    with RunLogs(state_dir / "logs", trace=trace) as logs:
        if to_build and not fetch_late:
            with trace.span("fetch", "run"):
                _fetch_inputs(project, to_build, cache, offline=options.offline, logs=logs, err=err)
        where = f"engine {engine.name}"
        if handover is not None:
            fleet = handover.fleet
            where = "endpoints " + ", ".join(
                f"{e.describe()} x{e.jobs}" for e in fleet.hosts.endpoints
            )
            if fleet.registry is not None:
                where += f"; parents handed over through {fleet.registry.prefix}"
        err.print(
            f"{where}; {len(to_build)} of {len(plan.images)} image(s) to build; "
            f"logs in {logs.directory}",
            highlight=False,
            markup=False,
        )
        # With --test, each image's smoke test starts as soon as it is built, pulled or
        # found up to date, while the rest of the family is still on its way.
        tester = SmokeTester(
            project, engine, jobs=options.test_jobs, logs=logs, on_result=_test_shower(err)
        )
        with tester, LiveBoard(err, total=len(plan.images), progress=options.progress) as board:

            def on_event(event: Event) -> None:
                board.event(event)
                state = event.outcome.state if event.outcome is not None else None
                if options.test and state in FINISHED_OK:
                    assert event.outcome is not None
                    at = None
                    if handover is not None:  # tested where it is
                        at = handover.fleet.engines.get(event.outcome.endpoint)
                    tester.submit(event.name, engine=at)

            builder = FamilyBuilder(
                project=project,
                engine=engine,
                cache=cache,
                stage_root=state_dir / "stage",
                logs=logs,
                jobs=options.jobs,
                fail_fast=options.fail_fast,
                on_event=on_event,
                wrap_sink=board.sink_for,
                on_build_start=journal.note_build,
                cache_from=cache_from,
                cache_to=cache_to,
                fetch_inputs=lambda spec, log: _fetch_late(
                    project, spec, cache, log, offline=options.offline
                ),
                handover=handover,
                sbom_dir=state_dir if options.sbom else None,
            )
            with trace.span("build", "run", engine=engine.name):
                outcomes = builder.build(plan)
            finished = tester.results()
            tests = {name: finished[name] for name in outcomes if name in finished}  # plan order
        pushes: list[PushOutcome] = []
        if registries:
            refused = {
                name: f"it was not built ({o.state})"
                for name, o in outcomes.items()
                if o.state not in FINISHED_OK
            }
            refused.update(
                {name: "its smoke test failed" for name, t in tests.items() if not t.passed}
            )
            assert options.push is not None  # registries are chosen only with --push
            held_by = None
            if handover is not None:  # each image from the endpoint that built or holds it
                engines = handover.fleet.engines
                held_by = {name: engines[o.endpoint] for name, o in outcomes.items() if o.endpoint}
            with trace.span("push", "run"):
                pushes = _push(
                    resolved,
                    list(outcomes),
                    registries,
                    refused,
                    force=options.push.force,
                    logs=logs,
                    err=err,
                    held_by=held_by,
                )
        logs.write_record(
            run_record(
                "build",
                project,
                resolved.graph,
                engine.name,
                outcomes,
                tests,
                pushes,
                logs,
                plan=plan,
            )
        )
        _report(
            project,
            outcomes,
            tests,
            logs,
            pushes=pushes,
            console=console,
            as_json=options.as_json,
            handover=handover,
        )
        if pushes and not options.as_json:
            _print_published(pushes, console)
    code = run_exit_code(outcomes)  # a verification failure's 4 outranks the 1s below
    if any(not result.passed for result in tests.values()):
        code = max(code, EXIT_FAILED)
    if any(not push.pushed for push in pushes):
        code = max(code, EXIT_FAILED)
    return code


def _handover_registry(
    resolved: Resolved, cache_to: Registry | None, options: BuildOptions
) -> Registry | None:
    """Where parents go from one endpoint to another: the hosts file's `registry:`, else
    the registry cache pushed to; None with one endpoint (nothing is handed over)."""
    from lowbuild.run.publish import chosen_registries

    hosts = resolved.hosts
    assert hosts is not None
    if len(hosts.endpoints) < 2:
        return None
    if options.offline:
        raise UsageError(
            "several endpoints hand parents over through a registry, which --offline forbids"
        )
    if hosts.registry is not None:
        [registry] = chosen_registries(
            resolved.project, [hosts.registry], tls_verify=hosts.tls_verify
        )
        return registry
    return cache_to


def _registry_cache(
    project: Project, given: RegistryCache, *, offline: bool
) -> tuple[Registry | None, Registry | None]:
    """The registry cache to pull from and to push to: --cache-from/--cache-to, else
    lowbuild.yaml's `cache:`; none offline (a cache is a network)."""
    from lowbuild.run.publish import chosen_registries

    if offline:
        return None, None

    def one(option: str | None) -> Registry | None:
        target = option or project.cache_registry
        if target is None:
            return None
        [registry] = chosen_registries(project, [target], tls_verify=given.tls_verify)
        return registry

    return one(given.pull_from), one(given.push_to)


@contextmanager
def _cache_client(registry: Registry | None, *, err: Console) -> Iterator[RegistryClient | None]:
    """A client for the plan's questions to a registry cache (one manifest request per
    image, over one connection); says so on `err` when the cache could not be reached,
    and the plan then builds."""
    from lowbuild.sources.registry import RegistryClient

    if registry is None:
        yield None
        return
    with RegistryClient(registry) as client:
        yield client
    if client.failure:
        err.print(
            f"registry cache {registry.prefix} not reachable ({client.failure}): "
            "what it would have given is built",
            highlight=False,
            markup=False,
        )


def _warn_without_emulation(graph: FamilyGraph, names: Sequence[str], err: Console) -> None:
    """Say before building when a foreign platform of the run cannot run on this host:
    its RUN steps, commit recipes and smoke tests would fail with "exec format error"
    (a variant that only copies files still builds, so this is not an error)."""
    platforms = [p for p in (graph.nodes[name].platform for name in names) if p]
    if not platforms:
        return  # (and the doctor's checks are not imported)
    from lowbuild.doctor.checks import emulation_checks

    checks = emulation_checks(platforms)
    for check in checks:
        if not check.ok:
            err.print(
                f"warning: {check.name}: {check.detail}; fix: {check.fix} "
                "(`lowbuild doctor` checks it)",
                highlight=False,
                markup=False,
            )


def _lookup(client: RegistryClient | None) -> CacheLookup | None:
    """The planner's question to a registry cache: which image does it hold for these
    inputs."""
    from lowbuild.sources.registry import cache_tag

    if client is None:
        return None
    # A variant (`web@linux-arm64`) is kept under its image's name: its fingerprint differs.
    return lambda name, fingerprint: client.image_id(split_key(name)[0], cache_tag(fingerprint))


def _push_registries(project: Project, push: PushTargets | None) -> tuple[Registry, ...]:
    from lowbuild.run.publish import chosen_registries

    if push is None:
        return ()
    return chosen_registries(project, push.to, tls_verify=push.tls_verify)


def _push(
    resolved: Resolved,
    names: Sequence[str],
    registries: Sequence[Registry],
    refused: Mapping[str, str],
    *,
    force: bool,
    logs: RunLogs,
    err: Console,
    held_by: Mapping[str, Engine] | None = None,
    sign: Signer | None = None,
) -> list[PushOutcome]:
    """Push `names` (build order) to `registries`, say each result on `err` as it comes,
    and record the pushed ones in PUBLISHED_FILE. What the registry already serves as
    PUBLISHED_FILE recorded is not pushed again, unless `force`."""
    from lowbuild.run.publish import PUBLISHED_FILE, PublishedRecord, push_family

    def show(outcome: PushOutcome) -> None:
        if outcome.unchanged:
            line = f"= already in {outcome.registry}: {outcome.image} {outcome.by_digest}"
        elif outcome.pushed:
            line = f"↑ pushed {outcome.image} to {outcome.registry}: {outcome.by_digest}"
        else:
            line = f"✗ not pushed {outcome.image} to {outcome.registry}: {outcome.error}"
        err.print(line, highlight=False, markup=False, emoji=False)

    project = resolved.project
    record = PublishedRecord.read(project.root / STATE_DIR / PUBLISHED_FILE)
    outcomes = push_family(
        project,
        resolved.graph,
        resolved.engine,
        names,
        registries,
        refused=refused,
        published=None if force else record,
        log_for=logs.sink,
        on_result=show,
        engine_for=(lambda name: held_by.get(name, resolved.engine)) if held_by else None,
        sign=sign,
        trace=logs.trace,
    )
    record.add(outcomes)
    record.write()
    return outcomes


def _print_published(pushes: Sequence[PushOutcome], console: Console) -> None:
    """The pullable by-digest references, one per line (what a deployment pins)."""
    for push in pushes:
        if push.by_digest:
            console.file.write(f"{push.by_digest}\n")


def run_push(
    selection: Selection,
    targets: PushTargets,
    *,
    as_json: bool,
    wait: bool,
    console: Console,
    err: Console,
) -> int:
    """`lowbuild push`: push the selected images (with their ancestors unless
    --no-deps), parents first, every tag, to each registry; exit 1 if any was not."""
    from lowbuild.run.insight import run_record
    from lowbuild.run.report import RunLogs

    resolved = resolve(selection)
    project = resolved.project
    registries = _push_registries(project, targets)
    names = select(resolved.graph, selection.names, with_deps=selection.with_deps)
    if targets.sign is not None:
        from lowbuild.engines.signing import check_signer

        check_signer(targets.sign)
    with (
        project_session(project, engine=resolved.engine, wait=wait, err=err),
        RunLogs(project.root / STATE_DIR / "logs", command="lowbuild push") as logs,
    ):
        with logs.trace.span("push", "run"):
            pushes = _push(
                resolved,
                names,
                registries,
                {},
                force=targets.force,
                logs=logs,
                err=err,
                sign=targets.sign,
            )
        logs.write_record(
            run_record(
                "push",
                project,
                resolved.graph,
                resolved.engine.name,
                {},
                {},
                pushes,
                logs,
                names=names,
            )
        )
    if as_json:
        console.file.write(json.dumps([p.to_json() for p in pushes], indent=2) + "\n")
    else:
        _print_published(pushes, console)
    return 0 if all(push.pushed for push in pushes) else EXIT_FAILED


def _fetch_inputs(
    project: Project,
    to_build: Sequence[PlannedImage],
    cache: Cache,
    *,
    offline: bool,
    logs: RunLogs,
    err: Console,
) -> None:
    """Verify every input of the images to build (and, offline, that it is present)
    before the first build starts; where each came from, or why not, goes to the run's
    FETCH_LOG too."""
    from lowbuild.sources.fetch import DEFAULT_JOBS, FetchPolicy, fetch_artifacts
    from lowbuild.sources.progress import LoggingReporter, reporter_for

    fetch_log = logs.sink(FETCH_LOG)
    try:
        with reporter_for(err) as shown:
            fetch_artifacts(
                [project.image(image.name) for image in to_build],
                cache=cache,
                rewrites=project.rewrites,
                offline=offline,
                jobs=DEFAULT_JOBS,
                policy=FetchPolicy(max_download=project.max_download),
                reporter=LoggingReporter(shown, fetch_log),
            )
    except LowbuildError as exc:
        fetch_log(f"error: {redact(str(exc))}")
        raise


def _fetch_late(
    project: Project, spec: ImageSpec, cache: Cache, log: LogSink, *, offline: bool
) -> None:
    """The artifacts of one image to build that were not fetched up front (it was to be
    pulled from a registry cache, which did not give it); what happens goes to its log
    only (the board is showing). Offline, a missing one is OfflineMissing, as up front."""
    from lowbuild.sources.fetch import DEFAULT_JOBS, FetchPolicy, SilentReporter, fetch_artifacts
    from lowbuild.sources.progress import LoggingReporter

    fetch_artifacts(
        [spec],
        cache=cache,
        rewrites=project.rewrites,
        offline=offline,
        jobs=DEFAULT_JOBS,
        policy=FetchPolicy(max_download=project.max_download),
        reporter=LoggingReporter(SilentReporter(), log),
    )


def run_tests(
    selection: Selection, *, jobs: int, console: Console, err: Console, as_json: bool
) -> int:
    """`lowbuild test`: run the smoke tests of existing images (all, or the named ones)."""
    from lowbuild.run.insight import run_record
    from lowbuild.run.report import RunLogs, test_record, tests_table

    resolved = resolve(selection)
    project = resolved.project
    names = resolved.named
    missing = [n for n in names if resolved.engine.inspect_image(project.ref(n)) is None]
    if missing:
        raise UsageError(
            f"no image to test for {', '.join(missing)}; build first: "
            f"lowbuild build {' '.join(missing)}"
        )
    from lowbuild.run.session import recorded_run

    # Recorded (its test containers carry its run ID, for the next run to remove if it is
    # killed), but no project lock: it only reads images.
    with (
        recorded_run(project.root / STATE_DIR, engine=resolved.engine.name),
        RunLogs(project.root / STATE_DIR / "logs", command="lowbuild test") as logs,
    ):
        with logs.trace.span("test", "run"):
            tests = _run_tests(project, resolved.engine, names, jobs=jobs, logs=logs, err=err)
        logs.write_record(
            run_record(
                "test",
                project,
                resolved.graph,
                resolved.engine.name,
                {},
                tests,
                [],
                logs,
                names=names,
            )
        )
    if as_json:
        console.print_json(json.dumps([test_record(t) for t in tests.values()]))
    else:
        console.print(tests_table(tests))
    return 0 if all(t.passed for t in tests.values()) else EXIT_FAILED


def _run_tests(
    project: Project,
    engine: Engine,
    names: Sequence[str],
    *,
    jobs: int,
    logs: RunLogs,
    err: Console,
) -> dict[str, TestOutcome]:
    from lowbuild.run.smoke import smoke_test_family

    return smoke_test_family(
        project, engine, names, jobs=jobs, logs=logs, on_result=_test_shower(err)
    )


def _test_shower(err: Console) -> Callable[[TestOutcome], None]:
    """Says each smoke test's result on `err` as it comes (the failure's detail too)."""

    def show(result: TestOutcome) -> None:
        mark = "✓" if result.passed else "✗"
        err.print(
            f"{mark} test {result.name}: {result.detail.splitlines()[0] if result.detail else ''}",
            highlight=False,
            markup=False,
        )
        if not result.passed:
            err.print(result.detail, highlight=False, markup=False)

    return show


def _report(
    project: Project,
    outcomes: dict[str, Outcome],
    tests: dict[str, TestOutcome],
    logs: RunLogs,
    *,
    pushes: Sequence[PushOutcome] = (),
    console: Console,
    as_json: bool,
    handover: Handover | None = None,
) -> None:
    from rich.markup import escape

    from lowbuild.run.report import outcome_record, summary_table, test_record, tests_table

    by_digest = {}
    if handover is not None:
        by_digest = {name: handover.by_digest(name) for name in outcomes}
    if as_json:
        records = []
        for name, outcome in outcomes.items():
            record = outcome_record(outcome, ref=project.ref(name), tags=project.refs_for(name))
            if handover is not None:
                record["endpoint"] = outcome.endpoint or None
                record["handover_ref"] = by_digest[name]
            record["log"] = str(logs.path(name))
            if name in tests:
                record["test"] = test_record(tests[name])
            if pushes:
                # A variant's record also carries its image's manifest list.
                mine = (name, split_key(name)[0])
                record["push"] = [p.to_json() for p in pushes if p.image in mine]
            records.append(record)
        console.print_json(json.dumps(records))
        return
    tags = {name: project.refs_for(name) for name in outcomes}
    console.print(
        summary_table(outcomes, tags=tags, handed=by_digest if handover is not None else None)
    )
    if tests:
        console.print(tests_table(tests))
    failed = [name for name, o in outcomes.items() if o.state == "failed"]
    for name in failed:
        console.print(f"[red]{name} failed[/]: log at {escape(str(logs.path(name)))}")


# ---- fetch and cache: the sources stage on its own, no engine needed ----


def run_fetch(
    *,
    project_file: Path | None,
    names: Sequence[str],
    cache_dir: Path | None,
    offline: bool,
    jobs: int,
    print_digests: bool,
    out: Console,
    err: Console,
    as_json: bool = False,
) -> int:
    """`lowbuild fetch`: make the named images' artifacts (all when none are named) present
    and verified in the cache; or, with `print_digests`, print what each URL hashes to."""
    from lowbuild.sources.fetch import FetchPolicy, SilentReporter, compute_digests, fetch_artifacts

    project = load_project(project_file, allow_missing_digests=print_digests)
    named = select(build_graph(project), names, with_deps=False)
    images = [project.image(name) for name in named]
    policy = FetchPolicy(max_download=project.max_download)
    if print_digests:
        results = compute_digests(images, rewrites=project.rewrites, offline=offline, policy=policy)
        if as_json:
            _write_json(
                out,
                [
                    {
                        "file": r.file,
                        "url": redact(r.url),
                        "sha256": r.sha256 or None,
                        "error": r.error or None,
                    }
                    for r in results
                ],
            )
        for result in results if not as_json else ():
            url = redact(result.url)
            if result.sha256:
                out.print(f"{result.sha256}  {result.file}  {url}", highlight=False, markup=False)
            else:
                err.print(f"# {result.file}  {url}: {result.error}", highlight=False, markup=False)
        got = {result.file for result in results if result.sha256}
        wanted = {artifact.file for image in images for artifact in image.artifacts}
        return 0 if wanted <= got else EXIT_FAILED
    cache = Cache(default_cache_root(cache_dir))
    wanted_digests = {artifact.sha256 for image in images for artifact in image.artifacts}
    if all(cache.contains(sha256) for sha256 in wanted_digests):
        # All present: no progress display to set up, but each entry is verified again
        # (hashed, or its stat unchanged since it last hashed right) before saying so.
        outcomes = fetch_artifacts(
            images, cache=cache, offline=offline, policy=policy, reporter=SilentReporter()
        )
        err.print(
            f"{len(wanted_digests)} artifact(s) verified in {cache.root} (0 downloaded)",
            highlight=False,
        )
        if as_json:
            _write_json(out, [_fetched_record(outcome) for outcome in outcomes])
        return 0
    from lowbuild.sources.progress import reporter_for

    with reporter_for(err) as reporter:
        outcomes = fetch_artifacts(
            images,
            cache=cache,
            rewrites=project.rewrites,
            offline=offline,
            jobs=jobs,
            policy=policy,
            reporter=reporter,
        )
    fetched = sum(1 for outcome in outcomes if outcome.source != "cache")
    err.print(
        f"{len(outcomes)} artifact(s) verified in {cache.root} ({fetched} downloaded)",
        highlight=False,
    )
    if as_json:
        _write_json(out, [_fetched_record(outcome) for outcome in outcomes])
    return 0


def _fetched_record(outcome: FetchOutcome) -> dict[str, object]:
    return {
        "image": outcome.image,
        "file": outcome.artifact.file,
        "sha256": outcome.artifact.sha256,
        "source": redact(outcome.source),  # a URL, or "cache"
        "path": str(outcome.path),
    }


def _write_json(out: Console, document: object) -> None:
    """Straight to the file: rich would highlight (and wrap) every token."""
    out.file.write(json.dumps(document, indent=2) + "\n")


def run_cache_ls(
    *, project_file: Path | None, cache_dir: Path | None, out: Console, as_json: bool = False
) -> int:
    """`lowbuild cache ls`: every entry with its size and the artifact names the project
    gives it."""
    names: dict[str, set[str]] = {}
    try:
        project = load_project(project_file)
    except SpecError:
        if project_file is not None:  # asked for explicitly: its errors matter
            raise
    else:
        for image in project.images:
            for artifact in image.artifacts:
                names.setdefault(artifact.sha256, set()).add(artifact.file)
    entries = list(Cache(default_cache_root(cache_dir)).entries())
    if as_json:
        records = [
            {"sha256": e.sha256, "size": e.size, "names": sorted(names.get(e.sha256, ()))}
            for e in entries
        ]
        _write_json(out, records)
        return 0
    for entry in entries:
        label = ", ".join(sorted(names.get(entry.sha256, ()))) or "-"
        out.print(f"{entry.sha256}  {entry.size:>12}  {label}", highlight=False, markup=False)
    return 0


def run_cache_verify(*, cache_dir: Path | None, out: Console, as_json: bool = False) -> int:
    """`lowbuild cache verify`: rehash every entry, quarantine bad ones (VerificationError)."""
    cache = Cache(default_cache_root(cache_dir))
    bad = cache.verify()
    total = sum(1 for _ in cache.entries()) + len(bad)
    if bad:
        lines = [
            f"{b.sha256}: content hashes to {b.actual}; moved to {b.quarantined_to}" for b in bad
        ]
        raise VerificationError(
            f"{len(bad)} of {total} cache entries were corrupt:\n  " + "\n  ".join(lines)
        )
    if as_json:
        _write_json(out, {"verified": total, "cache": str(cache.root)})
    else:
        out.print(f"{total} cache entries verified in {cache.root}", highlight=False)
    return 0


def run_cache_add(
    *,
    project_file: Path | None,
    files: Sequence[Path],
    cache_dir: Path | None,
    out: Console,
    as_json: bool = False,
) -> int:
    """`lowbuild cache add`: admit files only when the project declares their digest."""
    project = load_project(project_file)
    cache = Cache(default_cache_root(cache_dir))
    artifacts = [artifact for image in project.images for artifact in image.artifacts]
    spec_file = project.location.path if project.location else project.root / "lowbuild.yaml"
    admitted = admit_declared(cache, files, artifacts=artifacts, project=str(spec_file))
    if as_json:
        _write_json(
            out,
            [{"path": str(p), "file": a.file, "sha256": a.sha256} for p, a in admitted],
        )
        return 0
    for path, artifact in admitted:
        out.print(
            f"admitted {path} as {artifact.file} (sha256:{artifact.sha256})",
            highlight=False,
            markup=False,
        )
    return 0
