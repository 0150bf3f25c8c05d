"""Run work over a family in dependency order, concurrently up to a job limit.

What the scheduler promises:
- an image starts only when everything it needs (if selected) has finished successfully;
- a failure marks only its descendants `blocked`, naming the failed ancestor;
  independent branches go on (unless `fail_fast`, then nothing new starts and
  what did not start is `skipped`);
- at most `jobs` pieces of work run at once;
- on KeyboardInterrupt, `cancel` is set for running work, `on_interrupt` is
  called (to stop what the work waits on), nothing new starts, and the
  interrupt is re-raised once running work has returned.

The work itself (assemble, fingerprint, engine build, smoke test) is a callable
given by the caller; the scheduler knows nothing of engines.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from lowbuild.errors import EXIT_FAILED, LowbuildError

State = Literal["built", "pulled", "up-to-date", "failed", "blocked", "skipped"]
FINISHED_OK: frozenset[State] = frozenset({"built", "pulled", "up-to-date"})
"""The states of an image that exists as planned: its children may start."""


@dataclass(frozen=True)
class WorkResult:
    """What a successful piece of work returns."""

    state: Literal["built", "pulled", "up-to-date"]
    image_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Outcome:
    """What happened to one image in a run."""

    name: str
    state: State
    image_id: str = ""
    detail: str = ""
    blocked_by: str | None = None
    started: float | None = None  # time.time() stamps, for reports and for proving concurrency
    ended: float | None = None
    exit_code: int = 0  # a failure's: that of the LowbuildError it raised (1 otherwise)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True)
class Event:
    """A progress notification: `kind` is "start" or "end" (then `outcome` is set)."""

    name: str
    kind: Literal["start", "end"]
    outcome: Outcome | None = None


Work = Callable[[str, threading.Event], WorkResult]


@dataclass
class _Run:
    order: Sequence[str]
    needs: Mapping[str, Sequence[str]]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    running: dict[Future[WorkResult], tuple[str, float]] = field(default_factory=dict)

    def ready(self) -> list[str]:
        """Names whose needs are done (or outside the selection), in the given order."""
        busy = {name for name, _ in self.running.values()}
        out = []
        for name in self.order:
            if name in self.outcomes or name in busy:
                continue
            if all(self._satisfied(need) for need in self.needs.get(name, ())):
                out.append(name)
        return out

    def _satisfied(self, need: str) -> bool:
        if need not in self.needs:
            return True  # outside the selection: up to date or external
        done = self.outcomes.get(need)
        return done is not None and done.state in FINISHED_OK

    def finish(self, outcome: Outcome, on_event: Callable[[Event], None]) -> None:
        """Record `outcome` and tell `on_event`."""
        self.outcomes[outcome.name] = outcome
        on_event(Event(name=outcome.name, kind="end", outcome=outcome))

    def block_descendants(self, failed: str, on_event: Callable[[Event], None]) -> None:
        """Mark every not-yet-finished descendant of `failed` blocked by it."""
        frontier = [failed]
        while frontier:
            current = frontier.pop()
            for name in self.order:
                if current in self.needs.get(name, ()) and name not in self.outcomes:
                    detail = f"blocked: {failed} failed"
                    blocked = Outcome(name, "blocked", blocked_by=failed, detail=detail)
                    self.finish(blocked, on_event)
                    frontier.append(name)


def _outcome_of(future: Future[WorkResult], name: str, started: float) -> Outcome:
    """The Outcome of finished work: its result, or "failed" with what it raised."""
    ended = time.time()
    exc = future.exception()
    if exc is not None:
        code = exc.exit_code if isinstance(exc, LowbuildError) else EXIT_FAILED
        detail = _describe_failure(exc)
        return Outcome(name, "failed", detail=detail, started=started, ended=ended, exit_code=code)
    result = future.result()
    return Outcome(
        name,
        result.state,
        image_id=result.image_id,
        detail=result.detail,
        started=started,
        ended=ended,
    )


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, LowbuildError):
        return str(exc)
    # An unexpected error in our own code: keep the traceback, it is a bug report.
    return "".join(traceback.format_exception(exc)).strip()


def run_in_order(
    *,
    order: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    work: Work,
    jobs: int,
    fail_fast: bool = False,
    on_event: Callable[[Event], None] = lambda event: None,
    on_interrupt: Callable[[], object] = lambda: None,
) -> dict[str, Outcome]:
    """Run `work(name, cancel)` for every name in `order` (a topological order).

    `needs[name]` lists the images `name` is built from (its parent first); one not in
    `order` counts as satisfied (it is outside the selection: up to date or external).
    Returns one Outcome per name, in `order`.
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    state = _Run(order=order, needs=needs)
    cancel = threading.Event()
    stop_starting = False

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lowbuild") as pool:
        try:
            while len(state.outcomes) < len(order):
                if not stop_starting:
                    for name in state.ready()[: jobs - len(state.running)]:
                        started = time.time()
                        on_event(Event(name=name, kind="start"))
                        state.running[pool.submit(work, name, cancel)] = (name, started)
                if not state.running:
                    break  # nothing running and nothing can start: fail-fast leftovers
                # A timeout, so that Ctrl-C reaches this thread promptly: a blocked
                # lock wait is not woken by a signal another thread received.
                done, _ = wait(list(state.running), timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    name, started = state.running.pop(future)
                    outcome = _outcome_of(future, name, started)
                    state.finish(outcome, on_event)
                    if outcome.state == "failed":
                        state.block_descendants(name, on_event)
                        stop_starting = stop_starting or fail_fast
        except KeyboardInterrupt:
            # Tell running work to stop and stop what it is waiting on (`on_interrupt`:
            # the engine commands), then wait for it: leaving the `with` block joins.
            cancel.set()
            on_interrupt()
            raise

    for name in order:
        if name not in state.outcomes:
            state.finish(Outcome(name, "skipped", detail="not started: --fail-fast"), on_event)
    return {name: state.outcomes[name] for name in order}
