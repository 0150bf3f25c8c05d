"""What a run tells its user: a log file per image, a summary table, JSON, an exit code."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lowbuild.engines.base import LogSink, short_id
from lowbuild.errors import EXIT_FAILED
from lowbuild.run.scheduler import FINISHED_OK, Event, Outcome
from lowbuild.run.trace import TRACE_FILE, Trace
from lowbuild.sources.cache import write_atomically

if TYPE_CHECKING:  # the tables only read these; a build run need not import doctor
    from lowbuild.doctor import EngineReport
    from lowbuild.doctor.checks import Check
    from lowbuild.plan.planner import Plan
    from lowbuild.run.images import FamilyImage, PruneResult
    from lowbuild.run.smoke import TestOutcome

_STATE_STYLE = {
    "built": "green",
    "pulled": "blue",
    "up-to-date": "cyan",
    "failed": "bold red",
    "blocked": "yellow",
    "skipped": "dim",
}


RUN_RECORD = "run.json"


class RunLogs:
    """One directory per run, one `<image>.log` per image, and a `latest` link to the newest run.

    Failed images' logs are renamed `<image>.FAILED.log`, so `ls` finds them. Each log
    stays open while its image writes (a compile prints thousands of lines); `close()`
    ends the run.
    """

    def __init__(self, root: Path, *, trace: Trace | None = None, command: str = "") -> None:
        self.trace = trace if trace is not None else Trace(command or "lowbuild")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root.mkdir(parents=True, exist_ok=True)
        suffix = 1
        while True:
            self.directory = root / (stamp if suffix == 1 else f"{stamp}-{suffix}")
            try:
                self.directory.mkdir()
                break
            except FileExistsError:  # another run started in the same second
                suffix += 1
        tmp = root / f".latest.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.directory.name)
        tmp.replace(root / "latest")
        self._lock = threading.Lock()
        self._files: dict[str, TextIO] = {}

    def path(self, name: str) -> Path:
        failed = self.directory / f"{name}.FAILED.log"
        return failed if failed.exists() else self.directory / f"{name}.log"

    def sink(self, name: str) -> LogSink:
        """A thread-safe line writer for image `name`."""

        def write(line: str) -> None:
            with self._lock:
                out = self._files.get(name)
                if out is None:
                    out = self._files[name] = self.path(name).open(
                        "a", encoding="utf-8", errors="replace"
                    )
                out.write(line if line.endswith("\n") else line + "\n")
                out.flush()  # a user tails the log of a running build

        return write

    def mark_failed(self, name: str, detail: str) -> Path:
        self.sink(name)(f"FAILED: {detail}")
        with self._lock:
            self._files.pop(name).close()
            failed = self.directory / f"{name}.FAILED.log"
            (self.directory / f"{name}.log").replace(failed)
        return failed

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for out in self._files.values():
                out.close()
            self._files.clear()
        # The trace of whatever ran, an interrupted or failed run's too; a disk too full
        # for it does not turn the run's own result into an error.
        with contextlib.suppress(OSError):
            self.trace.write(self.directory / TRACE_FILE)

    def write_record(self, document: Mapping[str, Any]) -> None:
        """The run's record (RUN_RECORD): what `lowbuild report` shows beside the trace."""
        with contextlib.suppress(OSError):
            write_atomically(self.directory / RUN_RECORD, json.dumps(document, indent=1))


def outcome_record(outcome: Outcome, *, ref: str = "", tags: Sequence[str] = ()) -> dict[str, Any]:
    """One image's outcome as plain data (the `--json` form)."""
    return {
        "image": outcome.name,
        "ref": ref,
        "state": outcome.state,
        "image_id": outcome.image_id,
        "tags": list(tags),
        "duration": round(outcome.duration, 3) if outcome.duration is not None else None,
        "started": outcome.started,
        "ended": outcome.ended,
        "blocked_by": outcome.blocked_by,
        "detail": outcome.detail,
    }


def summary_table(
    outcomes: Mapping[str, Outcome],
    *,
    tags: Mapping[str, Sequence[str]] | None = None,
    handed: Mapping[str, str | None] | None = None,
) -> Table:
    """The run's summary; with endpoints (`handed`: each image's by-digest reference in
    the handover registry), which endpoint built or holds each image, and that reference."""
    table = Table(title="lowbuild summary", title_justify="left")
    columns = ["image", "state", "duration", "image ID", "tags", "detail"]
    if handed is not None:
        columns[1:1] = ["endpoint"]
        columns[-1:-1] = ["by digest"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for name, outcome in outcomes.items():
        duration = f"{outcome.duration:.1f}s" if outcome.duration is not None else "-"
        shown_id = short_id(outcome.image_id) or "-"
        detail = escape(_summary_detail(outcome))
        cells = [
            name,
            f"[{_STATE_STYLE[outcome.state]}]{outcome.state}[/]",
            duration,
            shown_id,
            escape(", ".join((tags or {}).get(name, ()))),
            detail,
        ]
        if handed is not None:
            cells[1:1] = [escape(outcome.endpoint) or "-"]
            cells[-1:-1] = [escape(handed.get(name) or "-")]
        table.add_row(*cells)
    return table


def _summary_detail(outcome: Outcome) -> str:
    """One line for the table: a failure's last line says what went wrong (the engine's
    final error), the first line is usually just the command that was run."""
    lines = [line.strip() for line in outcome.detail.splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1][:160] if outcome.state == "failed" else lines[0]


def run_exit_code(outcomes: Mapping[str, Outcome]) -> int:
    """0 when every image is built, pulled or up to date; else EXIT_FAILED, or a failure's
    own code when it is higher (EXIT_VERIFY: a registry cache entry that was not what
    its tag says)."""
    if all(outcome.state in FINISHED_OK for outcome in outcomes.values()):
        return 0
    return max([EXIT_FAILED, *(o.exit_code for o in outcomes.values() if o.state == "failed")])


def plan_table(plan: Plan, *, placement: Mapping[str, str] | None = None) -> Table:
    """`lowbuild plan`: each image, build or up to date, and why; with endpoints
    (`placement`), where it is meant to be built or is held."""
    title = f"plan ({plan.engine})" if placement is None else "plan (endpoints)"
    table = Table(title=title, title_justify="left")
    table.add_column("image")
    table.add_column("action")
    if placement is not None:
        table.add_column("endpoint")
    table.add_column("why", overflow="fold")
    for image in plan.images:
        style = {"build": "yellow", "pull": "blue"}.get(image.action, "cyan")
        why = "; ".join(image.reasons) if image.reasons else "fingerprint matches the local image"
        where = [] if placement is None else [escape(placement.get(image.name, "-"))]
        table.add_row(image.name, f"[{style}]{image.action}[/]", *where, escape(why))
    return table


def tests_table(tests: dict[str, TestOutcome]) -> Table:
    """The smoke tests of a run or of `lowbuild test`."""
    table = Table(title="smoke tests", title_justify="left")
    for column in ("image", "result", "time", "detail"):
        table.add_column(column, overflow="fold")
    for name, result in tests.items():
        mark = "[green]passed[/]" if result.passed else "[bold red]failed[/]"
        detail = result.detail.splitlines()[0] if result.detail else ""
        table.add_row(name, mark, f"{result.seconds:.1f}s", escape(detail[:160]))
    return table


def test_record(result: TestOutcome) -> dict[str, object]:
    return {
        "image": result.name,
        "passed": result.passed,
        "detail": result.detail,
        "seconds": round(result.seconds, 3),
    }


def doctor_table(reports: Sequence[EngineReport]) -> Table:
    """The table `lowbuild doctor` prints: one block of rows per engine."""
    table = Table(title="lowbuild doctor")
    table.add_column("engine", style="bold")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for report in reports:
        table.add_section()
        verdict = Text("works", style="green") if report.ok else Text("BROKEN", style="bold red")
        table.add_row(report.title, Text(report.version or "-"), verdict, "", "")
        for check in report.checks:
            mark = Text("ok", style="green") if check.ok else Text("FAIL", style="red")
            table.add_row("", check.name, mark, Text(check.detail), Text(check.fix))
    return table


def doctor_bases_table(
    reports: Sequence[EngineReport], bases: Mapping[str, Sequence[str]]
) -> Table | Text:
    """The family's external base images on each engine that works: a missing one is the
    family's problem, not the engine's, so it has its own table."""
    working = [r for r in reports if r.ok]
    if not working:
        return Text("family bases: not checked, no engine works", style="yellow")
    table = Table(title=f"family base images ({len(bases)})")
    table.add_column("engine", style="bold")
    table.add_column("base image")
    table.add_column("present")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for report in working:
        table.add_section()
        for check in report.family_bases:
            mark = Text("yes", style="green") if check.ok else Text("MISSING", style="yellow")
            table.add_row(report.title, check.name, mark, Text(check.detail), Text(check.fix))
    return table


def doctor_emulation_table(checks: Sequence[Check]) -> Table:
    """Whether this host runs the family's foreign platforms (binfmt_misc and qemu)."""
    table = Table(title="emulation of foreign platforms (this host's, for every engine)")
    table.add_column("check", style="bold")
    table.add_column("ok")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in checks:
        mark = Text("yes", style="green") if check.ok else Text("NO", style="red")
        table.add_row(check.name, mark, Text(check.detail), Text(check.fix))
    return table


def human_bytes(count: int | None, *, signed: bool = False) -> str:
    """A size the way `docker images` prints it (decimal units, 3 significant digits);
    `signed`: with + or - in front. None: "-"."""
    if count is None:
        return "-"
    sign = ("+" if count > 0 else "-" if count < 0 else "±") if signed else ""
    value = float(abs(count)) if signed else float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            text = f"{value:.0f}" if unit == "B" else f"{value:.3g}"
            return f"{sign}{text} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def images_table(rows: Sequence[FamilyImage]) -> Table:
    """`lowbuild images`: each image's current build, what it adds over its parent, and
    what changed since the build before it."""
    table = Table(
        title=f"lowbuild images ({sum(r.id is not None for r in rows)} of {len(rows)} built)"
    )
    table.add_column("image", style="bold")
    table.add_column("tags", overflow="fold")
    table.add_column("id")
    table.add_column("size", justify="right")
    table.add_column("adds", justify="right")
    table.add_column("since the previous build", overflow="fold")
    for row in rows:
        if row.id is None:
            table.add_row(row.name, "", "-", "-", "-", Text("not built", style="yellow"))
            continue
        if row.previous is None:
            since = "no earlier build in the store"
        else:
            change = human_bytes(row.size_change, signed=True)
            what = "; ".join(row.changes) or "same inputs"
            since = f"{change} ({what}); was {short_id(row.previous.id)}"
        table.add_row(
            row.name,
            Text(", ".join(row.tags)),
            short_id(row.id),
            human_bytes(row.size),
            human_bytes(row.adds),
            Text(since),
        )
    return table


def prune_table(result: PruneResult) -> Table:
    """`lowbuild prune`: the family's earlier builds, removed (or to be) or kept, and why."""
    verb = "would remove" if result.dry_run else "removed"
    table = Table(title=f"lowbuild prune: {verb} {len(result.removed)}, kept {len(result.kept)}")
    table.add_column("image")
    table.add_column("id")
    table.add_column("built")
    table.add_column("size", justify="right")
    table.add_column(verb if result.dry_run else "done", overflow="fold")
    for item in result.items:
        outcome = (
            Text(f"kept: {item.kept}", style="dim") if item.kept else Text(verb, style="green")
        )
        table.add_row(
            item.ref,
            short_id(item.id),
            item.created[:19].replace("T", " "),
            human_bytes(item.size),
            outcome,
        )
    return table


class LiveBoard:
    """Progress while the family builds: a live table on a terminal, plain lines otherwise.

    `event` takes scheduler events; `sink_for(name, sink)` wraps an image's log sink so the
    board shows its latest line.
    """

    def __init__(self, console: Console, *, total: int, progress: str = "auto") -> None:
        """`progress`: "auto" (a live table on a terminal, else a line per start and end),
        "tty" (the live table anyway), "plain" (lines, and every log line of every image
        as it comes, prefixed `[image]`: what a CI log wants) or "quiet" (nothing)."""
        self.console = console
        self.total = total
        self.progress = progress
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._last: dict[str, str] = {}
        self._live: Live | None = None

    def __enter__(self) -> LiveBoard:
        if self.progress == "tty" or (self.progress == "auto" and self.console.is_terminal):
            # Rendered at each refresh tick only, never per log line (a compile prints
            # thousands of lines).
            self._live = Live(
                console=self.console, get_renderable=self._render, refresh_per_second=4
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def event(self, event: Event) -> None:
        with self._lock:
            if event.kind == "start":
                self._state[event.name] = "running"
                self._started[event.name] = time.monotonic()
                line = f"→ {event.name}: started" + (
                    f" on {event.endpoint}" if event.endpoint else ""
                )
            else:
                assert event.outcome is not None
                outcome = event.outcome
                self._state[event.name] = outcome.state
                took = f" in {outcome.duration:.1f}s" if outcome.duration is not None else ""
                summary = _summary_detail(outcome)
                why = f" ({summary[:160]})" if summary else ""
                mark = "✓" if outcome.state in FINISHED_OK else "✗"
                line = f"{mark} {event.name}: {outcome.state}{took}{why}"
        if self._live is None and self.progress != "quiet":
            self.console.print(line, highlight=False, markup=False)

    def sink_for(self, name: str, sink: LogSink) -> LogSink:
        plain = self.progress == "plain"

        def write(line: str) -> None:
            sink(line)
            stripped = line.strip()
            if stripped:
                with self._lock:
                    self._last[name] = stripped[:100]
            if plain:
                self.console.print(
                    f"[{name}] {line.rstrip()}", highlight=False, markup=False, soft_wrap=True
                )

        return write

    def _render(self) -> Table:
        with self._lock:
            return self._table()

    def _table(self) -> Table:
        done = sum(1 for state in self._state.values() if state != "running")
        table = Table(title=f"building: {done}/{self.total} done", title_justify="left")
        table.add_column("image")
        table.add_column("state")
        table.add_column("time", justify="right")
        table.add_column("last log line", overflow="ellipsis", no_wrap=True)
        now = time.monotonic()
        for name, state in self._state.items():
            elapsed = f"{now - self._started[name]:.0f}s" if name in self._started else ""
            style = _STATE_STYLE.get(state, "bold")
            table.add_row(name, f"[{style}]{state}[/]", elapsed, escape(self._last.get(name, "")))
        return table
