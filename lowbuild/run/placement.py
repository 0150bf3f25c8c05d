"""Where a ready image is built when a family is split over several endpoints.

A pure decision, shared by the scheduler (run/scheduler.py) and the scaling
simulation of scripts/bench.py, so that what is simulated is what runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def choose_endpoint(
    preferred: Sequence[str],
    free: Mapping[str, int],
    *,
    exclude: frozenset[str] = frozenset(),
) -> str | None:
    """The endpoint to start a ready image on, or None when none has a free slot.

    `preferred`: the endpoints that already hold what the image is built from (its
    parent first): starting there saves the registry handover. `free`: each live
    endpoint's free job slots, in the order the endpoints were declared. `exclude`:
    endpoints this image must not go to (one it was lost on).

    The first preferred endpoint with a free slot wins; else the endpoint with the most
    free slots (ties: the first declared), so work spreads before it queues. An image
    never waits for a busy preferred endpoint while another is free: a handover costs
    about a second, a queued build its whole length.
    """
    for name in preferred:
        if name not in exclude and free.get(name, 0) > 0:
            return name
    best: str | None = None
    for name, slots in free.items():
        if name in exclude or slots <= 0:
            continue
        if best is None or slots > free[best]:
            best = name
    return best


def preferred_endpoints(holders: Sequence[Sequence[str]]) -> list[str]:
    """The endpoints to prefer for an image, from the endpoints holding each of what it
    is built from (`holders`: its parent's first): those holding the most of them first
    (each one they lack is a handover), ties in the order met (the parent's first)."""
    met = list(dict.fromkeys(endpoint for held in holders for endpoint in held))
    return sorted(met, key=lambda e: -sum(e in held for held in holders))


@dataclass(frozen=True)
class Placed:
    """One image of a simulated run: where it ran, and when (seconds from the start)."""

    endpoint: str
    start: float
    end: float
    handovers: int  # the needs it had handed over to its endpoint first


@dataclass(frozen=True)
class Simulation:
    """A simulated run (`simulate`)."""

    placed: Mapping[str, Placed]

    @property
    def makespan(self) -> float:
        return max((p.end for p in self.placed.values()), default=0.0)

    @property
    def handovers(self) -> int:
        return sum(p.handovers for p in self.placed.values())


def simulate(
    order: Sequence[str],
    needs: Mapping[str, Sequence[str]],
    durations: Mapping[str, float],
    jobs: Mapping[str, int],
    *,
    handover_s: float = 0.0,
    held: Mapping[str, Sequence[str]] | None = None,
) -> Simulation:
    """Replay the scheduler's decisions (run/scheduler.py run_placed) on a clock instead of
    engines: images start in `order` as soon as their needs have ended and an endpoint
    (`jobs`: each one's job limit, in declared order) has a free slot, placed by
    `choose_endpoint`; each need not yet on that endpoint adds `handover_s` before the
    build (one after another), and is held there from then on. `held`: images that are
    not built (up to date) and the endpoints holding them. Deterministic."""
    where: dict[str, list[str]] = {name: list(e) for name, e in (held or {}).items()}
    placed: dict[str, Placed] = {}
    todo = [name for name in order if name not in where]
    wanted = set(todo)
    ended: set[str] = set(where)
    running: list[tuple[float, int, str]] = []  # (end, tie-break, name): a heap
    busy = dict.fromkeys(jobs, 0)
    now, counter = 0.0, 0
    while todo or running:
        for name in list(todo):
            if any(need in wanted and need not in ended for need in needs.get(name, ())):
                continue
            preferred = preferred_endpoints([where.get(n, []) for n in needs.get(name, ())])
            free = {e: jobs[e] - busy[e] for e in jobs}
            chosen = choose_endpoint(preferred, free)
            if chosen is None:
                break  # every slot taken: wait for one to end
            moved = [n for n in needs.get(name, ()) if n in where and chosen not in where[n]]
            for need in moved:
                where[need].append(chosen)
            end = now + handover_s * len(moved) + durations.get(name, 0.0)
            placed[name] = Placed(chosen, now, end, len(moved))
            busy[chosen] += 1
            todo.remove(name)
            heapq.heappush(running, (end, counter, name))
            counter += 1
        if not running:
            break  # what is left waits on needs outside the run: nothing can start
        now, _, name = heapq.heappop(running)
        finished = [name]
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[2])
        for name in finished:
            ended.add(name)
            where[name] = [placed[name].endpoint]
            busy[placed[name].endpoint] -= 1
    return Simulation(placed=placed)


def critical_path(
    order: Sequence[str], needs: Mapping[str, Sequence[str]], durations: Mapping[str, float]
) -> float:
    """The longest chain of builds through the family: no schedule ends sooner."""
    finish: dict[str, float] = {}
    for name in order:
        start = max((finish.get(n, 0.0) for n in needs.get(name, ())), default=0.0)
        finish[name] = start + durations.get(name, 0.0)
    return max(finish.values(), default=0.0)
