"""Run work over a family in dependency order, concurrently up to a job limit.

What the scheduler promises:
- an image starts only when everything it needs (if selected) has finished successfully;
- a failure marks only its descendants `blocked`, naming the failed ancestor;
  independent branches go on (unless `fail_fast`, then nothing new starts and
  what did not start is `skipped`);
- at most `jobs` pieces of work run at once;
- of the images ready at once, the one with the longest remaining path (its own
  expected time plus the longest chain of its descendants', `weights`) starts first,
  ties in the given order: the chain that sets the run's length is never left waiting
  behind a short leaf;
- on KeyboardInterrupt, `cancel` is set for running work, `on_interrupt` is
  called (to stop what the work waits on), nothing new starts, and the
  interrupt is re-raised once running work has returned.

Over several endpoints (`run_placed`), each has its own job limit; a ready image
goes where placement.choose_endpoint says. Work that raises EndpointLost takes
its endpoint out of the run (nothing new starts there) and is started once more
on another endpoint; lost a second time, it fails with both reasons, and only
its descendants are blocked.

The work itself (assemble, fingerprint, engine build, smoke test) is a callable
given by the caller; the scheduler knows nothing of engines.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Literal

from lowbuild.errors import EXIT_ENVIRONMENT, EXIT_FAILED, LowbuildError
from lowbuild.run.placement import choose_endpoint

State = Literal["built", "pulled", "up-to-date", "failed", "blocked", "skipped"]
FINISHED_OK: frozenset[State] = frozenset({"built", "pulled", "up-to-date"})
"""The states of an image that exists as planned: its children may start."""


LOCAL = ""
"""The endpoint of a run on one engine (`run_in_order`)."""


class EndpointLost(LowbuildError):
    """The endpoint a piece of work ran on stopped answering (its engine died, its
    socket went away): the work is worth trying on another endpoint."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"endpoint {endpoint} lost: {reason}")
        self.endpoint = endpoint


@dataclass(frozen=True)
class WorkResult:
    """What a successful piece of work returns."""

    state: Literal["built", "pulled", "up-to-date"]
    image_id: str = ""
    detail: str = ""
    digest: str = ""  # the manifest digest of the copy it left in a registry, if it did
    endpoint: str | None = None  # where the image is, when not where the work ran


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
    endpoint: str = LOCAL  # where it ran (its last try)
    digest: str = ""  # WorkResult.digest
    tries: int = 0  # how many endpoints it was started on (2: lost once, retried)

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
    endpoint: str = LOCAL  # "start": where it starts


Work = Callable[[str, threading.Event], WorkResult]
PlacedWork = Callable[[str, str, threading.Event], WorkResult]
"""work(name, endpoint, cancel)."""


@dataclass(frozen=True)
class _Started:
    name: str
    endpoint: str
    started: float


def remaining_paths(
    order: Sequence[str], needs: Mapping[str, Sequence[str]], weights: Mapping[str, float]
) -> dict[str, float]:
    """Each name's longest remaining path: its weight (1 when unknown) plus the longest
    remaining path of the names that need it. `order` is topological."""
    children: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for need in needs.get(name, ()):
            if need in children:
                children[need].append(name)
    longest: dict[str, float] = {}
    for name in reversed(order):
        below = max((longest[child] for child in children[name]), default=0.0)
        longest[name] = weights.get(name, 1.0) + below
    return longest


@dataclass
class _Run:
    order: Sequence[str]
    needs: Mapping[str, Sequence[str]]
    weights: Mapping[str, float] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    running: dict[Future[WorkResult], _Started] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # endpoint → why it was lost
    # name → (endpoint, why) for each endpoint it was lost on
    tried: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def lost_on(self, name: str) -> frozenset[str]:
        return frozenset(endpoint for endpoint, _ in self.tried.get(name, ()))

    def why_lost(self, name: str) -> str:
        return "; then ".join(why for _, why in self.tried.get(name, ()))

    def __post_init__(self) -> None:
        self._longest = remaining_paths(self.order, self.needs, self.weights)
        self._rank = {name: index for index, name in enumerate(self.order)}

    def ready(self) -> list[str]:
        """Names whose needs are done (or outside the selection): the longest remaining
        path first, then in the given order."""
        busy = {started.name for started in self.running.values()}
        out = []
        for name in self.order:
            if name in self.outcomes or name in busy:
                continue
            if all(self._satisfied(need) for need in self.needs.get(name, ())):
                out.append(name)
        return sorted(out, key=lambda name: (-self._longest[name], self._rank[name]))

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


def _outcome_of(future: Future[WorkResult], run: _Started, *, tries: int) -> Outcome:
    """The Outcome of finished work: its result, or "failed" with what it raised."""
    ended, name, started = time.time(), run.name, run.started
    exc = future.exception()
    if exc is not None:
        code = exc.exit_code if isinstance(exc, LowbuildError) else EXIT_FAILED
        detail = _describe_failure(exc)
        return Outcome(
            name,
            "failed",
            detail=detail,
            started=started,
            ended=ended,
            exit_code=code,
            endpoint=run.endpoint,
            tries=tries,
        )
    result = future.result()
    return Outcome(
        name,
        result.state,
        image_id=result.image_id,
        detail=result.detail,
        started=started,
        ended=ended,
        endpoint=run.endpoint if result.endpoint is None else result.endpoint,
        digest=result.digest,
        tries=tries,
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
    return run_placed(
        order=order,
        needs=needs,
        work=lambda name, endpoint, cancel: work(name, cancel),
        endpoints={LOCAL: jobs},
        fail_fast=fail_fast,
        on_event=on_event,
        on_interrupt=on_interrupt,
    )


def run_placed(
    *,
    order: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    work: PlacedWork,
    endpoints: Mapping[str, int],
    prefer: Callable[[str], Sequence[str]] = lambda name: (),
    fail_fast: bool = False,
    on_event: Callable[[Event], None] = lambda event: None,
    on_interrupt: Callable[[], object] = lambda: None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, Outcome]:
    """`run_in_order` over several endpoints: `endpoints` maps each (in the order they
    were declared) to its job limit; `work(name, endpoint, cancel)` runs there.
    `prefer(name)`: the endpoints that already hold what `name` is built from.
    `weights[name]`: its expected time (an earlier run's), for the order ready images
    start in (default 1 each: the longest chain of images first)."""
    if not endpoints or any(jobs < 1 for jobs in endpoints.values()):
        raise ValueError("every endpoint needs a job limit of at least 1")
    state = _Run(order=order, needs=needs, weights=weights or {})
    cancel = threading.Event()
    stop_starting = False

    with ThreadPoolExecutor(
        max_workers=sum(endpoints.values()), thread_name_prefix="lowbuild"
    ) as pool:
        try:
            while len(state.outcomes) < len(order):
                if not stop_starting:
                    _start_ready(state, pool, work, endpoints, prefer, cancel, on_event)
                if not state.running:
                    break  # nothing running and nothing can start: fail-fast leftovers
                # A timeout, so that Ctrl-C reaches this thread promptly: a blocked
                # lock wait is not woken by a signal another thread received.
                done, _ = wait(list(state.running), timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    run = state.running.pop(future)
                    exc = future.exception()
                    if isinstance(exc, EndpointLost):
                        state.lost.setdefault(exc.endpoint, str(exc))
                        tried = state.tried.setdefault(run.name, [])
                        tried.append((exc.endpoint, str(exc)))
                        if len(tried) < 2 and not cancel.is_set():
                            continue  # started again elsewhere on the next round
                    outcome = _outcome_of(future, run, tries=len(state.tried.get(run.name, ())))
                    if outcome.state == "failed" and run.name in state.tried:
                        # Lost before: say so, then how its last try ended.
                        last = (
                            "" if isinstance(exc, EndpointLost) else f"; then on {run.endpoint}: "
                        )
                        detail = state.why_lost(run.name) + (last + outcome.detail if last else "")
                        outcome = replace(outcome, detail=detail)
                    elif run.name in state.tried:
                        retried = f"{state.why_lost(run.name)}; retried on {run.endpoint}"
                        detail = f"{outcome.detail} ({retried})" if outcome.detail else retried
                        outcome = replace(outcome, detail=detail)
                    state.finish(outcome, on_event)
                    if outcome.state == "failed":
                        state.block_descendants(run.name, on_event)
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


def _start_ready(
    state: _Run,
    pool: ThreadPoolExecutor,
    work: PlacedWork,
    endpoints: Mapping[str, int],
    prefer: Callable[[str], Sequence[str]],
    cancel: threading.Event,
    on_event: Callable[[Event], None],
) -> None:
    """Start every ready image that has an endpoint with a free slot."""
    busy: dict[str, int] = {}
    for started in state.running.values():
        busy[started.endpoint] = busy.get(started.endpoint, 0) + 1
    free = {e: jobs - busy.get(e, 0) for e, jobs in endpoints.items() if e not in state.lost}
    for name in state.ready():
        if not free:  # every endpoint lost: nothing can build what is left
            detail = "no endpoint left: " + "; ".join(state.lost.values())
            state.finish(
                Outcome(name, "failed", detail=detail, exit_code=EXIT_ENVIRONMENT), on_event
            )
            state.block_descendants(name, on_event)
            continue
        chosen = choose_endpoint(prefer(name), free, exclude=state.lost_on(name))
        if chosen is None:
            continue  # every live endpoint is busy
        free[chosen] -= 1
        stamp = time.time()
        on_event(Event(name=name, kind="start", endpoint=chosen))
        state.running[pool.submit(work, name, chosen, cancel)] = _Started(name, chosen, stamp)
