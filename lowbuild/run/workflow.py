"""The commands' workflows: load → plan → fetch → build → test → report.

The CLI parses options into a request and calls one function here; everything a
command does lives here so that it can be tested and reused without the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lowbuild.engines.base import Engine
from lowbuild.engines.detect import select_engine
from lowbuild.errors import EXIT_FAILED, OfflineMissing, UsageError
from lowbuild.plan.graph import FamilyGraph, build_graph
from lowbuild.plan.planner import Plan, check_selection, make_plan
from lowbuild.run.build import FamilyBuilder, TestOutcome, smoke_test_family
from lowbuild.run.report import (
    LiveBoard,
    RunLogs,
    outcome_record,
    run_exit_code,
    summary_table,
)
from lowbuild.run.scheduler import Outcome
from lowbuild.sources.cache import Cache, default_cache_root
from lowbuild.sources.fetch import fetch_artifacts
from lowbuild.sources.progress import reporter_for
from lowbuild.spec.load import load_project
from lowbuild.spec.model import Project

STATE_DIR = ".lowbuild"  # beside lowbuild.yaml: staged contexts and run logs


def default_jobs() -> int:
    """Builds mix CPU (compiles) and waiting (package downloads): one per core, at least 2."""
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True)
class Selection:
    """What the user asked for: project file, images, engine."""

    project_file: Path | None = None
    names: tuple[str, ...] = ()
    with_deps: bool = True
    engine: str | None = None


@dataclass(frozen=True)
class Loaded:
    project: Project
    graph: FamilyGraph
    engine: Engine


def load(selection: Selection) -> Loaded:
    """Spec, graph (parents checked) and engine (flag, LOWBUILD_ENGINE, lowbuild.yaml, probe)."""
    project = load_project(selection.project_file)
    graph = build_graph(project)
    check_selection(graph, selection.names)
    engine_name = selection.engine or os.environ.get("LOWBUILD_ENGINE") or project.engine
    return Loaded(project=project, graph=graph, engine=select_engine(engine_name))


def plan_table(plan: Plan) -> Table:
    table = Table(title=f"plan ({plan.engine})", title_justify="left")
    table.add_column("image")
    table.add_column("action")
    table.add_column("why", overflow="fold")
    for image in plan.images:
        style = "yellow" if image.action == "build" else "cyan"
        why = "; ".join(image.reasons) if image.reasons else "fingerprint matches the local image"
        table.add_row(image.name, f"[{style}]{image.action}[/]", escape(why))
    return table


def run_plan(selection: Selection, *, console: Console, as_json: bool) -> int:
    """`lowbuild plan`: print what would be built and why; builds nothing."""
    loaded = load(selection)
    plan = make_plan(
        loaded.project,
        loaded.graph,
        loaded.engine,
        names=selection.names,
        with_deps=selection.with_deps,
    )
    if as_json:
        console.print_json(json.dumps({"engine": plan.engine, "images": plan.to_records()}))
    else:
        console.print(plan_table(plan))
    return 0


@dataclass(frozen=True)
class BuildOptions:
    jobs: int
    fail_fast: bool = False
    test: bool = False
    offline: bool = False
    cache_dir: Path | None = None
    as_json: bool = False


def run_build(
    selection: Selection, options: BuildOptions, *, console: Console, err: Console
) -> int:
    """`lowbuild build`: plan, fetch what is missing, build in order, optionally test, report."""
    loaded = load(selection)
    project, engine = loaded.project, loaded.engine
    plan = make_plan(
        project, loaded.graph, engine, names=selection.names, with_deps=selection.with_deps
    )
    to_build = [image for image in plan.images if image.action == "build"]
    cache = Cache(default_cache_root(options.cache_dir))
    if to_build:
        # Every input is verified (and, offline, known present) before the first build starts.
        with reporter_for(err) as reporter:
            try:
                fetch_artifacts(
                    [project.image(image.name) for image in to_build],
                    cache=cache,
                    rewrites=project.rewrites,
                    offline=options.offline,
                    jobs=4,
                    reporter=reporter,
                )
            except OfflineMissing as exc:
                # An offline host gets its inputs as a bundle: say so where it is needed.
                raise OfflineMissing(
                    f"{exc}\non an air-gapped host, bring them all at once with: "
                    "lowbuild bundle import FILE (written by `lowbuild bundle export FILE` "
                    "on a connected host)"
                ) from None
    state_dir = project.root / STATE_DIR
    logs = RunLogs(state_dir / "logs")
    err.print(
        f"engine {engine.name}; {len(to_build)} of {len(plan.images)} image(s) to build; "
        f"logs in {logs.directory}",
        highlight=False,
    )
    with LiveBoard(err, total=len(plan.images)) as board:
        builder = FamilyBuilder(
            project=project,
            engine=engine,
            cache=cache,
            stage_root=state_dir / "stage",
            logs=logs,
            jobs=options.jobs,
            fail_fast=options.fail_fast,
            on_event=board.event,
            wrap_sink=board.sink_for,
        )
        outcomes = builder.build(plan)
    tests: dict[str, TestOutcome] = {}
    if options.test:
        ready = [name for name, o in outcomes.items() if o.state in {"built", "up-to-date"}]
        tests = _run_tests(project, engine, ready, jobs=options.jobs, logs=logs, err=err)
    _report(project, outcomes, tests, logs, console=console, as_json=options.as_json)
    code = run_exit_code(outcomes)
    if any(not result.passed for result in tests.values()):
        code = EXIT_FAILED
    return code


def run_tests(
    selection: Selection, *, jobs: int, console: Console, err: Console, as_json: bool
) -> int:
    """`lowbuild test`: run the smoke tests of existing images (all, or the named ones)."""
    loaded = load(selection)
    project = loaded.project
    names = selection.names or project.image_names()
    missing = [n for n in names if loaded.engine.inspect_image(project.ref(n)) is None]
    if missing:
        raise UsageError(
            f"no image to test for {', '.join(missing)}; build first: "
            f"lowbuild build {' '.join(missing)}"
        )
    logs = RunLogs(project.root / STATE_DIR / "logs")
    tests = _run_tests(project, loaded.engine, names, jobs=jobs, logs=logs, err=err)
    if as_json:
        console.print_json(json.dumps([_test_record(t) for t in tests.values()]))
    else:
        console.print(_tests_table(tests))
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
    def show(result: TestOutcome) -> None:
        mark = "✓" if result.passed else "✗"
        err.print(
            f"{mark} test {result.name}: {result.detail.splitlines()[0] if result.detail else ''}",
            highlight=False,
            markup=False,
        )
        if not result.passed:
            err.print(result.detail, highlight=False, markup=False)

    return smoke_test_family(project, engine, names, jobs=jobs, logs=logs, on_result=show)


def _test_record(result: TestOutcome) -> dict[str, object]:
    return {
        "image": result.name,
        "passed": result.passed,
        "detail": result.detail,
        "seconds": round(result.seconds, 3),
    }


def _tests_table(tests: dict[str, TestOutcome]) -> Table:
    table = Table(title="smoke tests", title_justify="left")
    for column in ("image", "result", "time", "detail"):
        table.add_column(column, overflow="fold")
    for name, result in tests.items():
        mark = "[green]passed[/]" if result.passed else "[bold red]failed[/]"
        detail = result.detail.splitlines()[0] if result.detail else ""
        table.add_row(name, mark, f"{result.seconds:.1f}s", escape(detail[:160]))
    return table


def _report(
    project: Project,
    outcomes: dict[str, Outcome],
    tests: dict[str, TestOutcome],
    logs: RunLogs,
    *,
    console: Console,
    as_json: bool,
) -> None:
    typed = outcomes
    if as_json:
        records = []
        for name, outcome in typed.items():
            spec = project.image(name)
            record = outcome_record(outcome, ref=project.ref(spec), tags=project.refs(spec))
            record["log"] = str(logs.path(name))
            if name in tests:
                record["test"] = _test_record(tests[name])
            records.append(record)
        console.print_json(json.dumps(records))
        return
    tags = {name: project.refs(project.image(name)) for name in typed}
    console.print(summary_table(typed, tags=tags))
    if tests:
        console.print(_tests_table(tests))
    failed = [name for name, o in typed.items() if o.state == "failed"]
    for name in failed:
        console.print(f"[red]{name} failed[/]: log at {escape(str(logs.path(name)))}")
