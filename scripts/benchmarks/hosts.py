"""The `hosts` section's pure parts: a generated family's schedule over N endpoints,
replayed with lowbuild's own placement (lowbuild.run.placement.simulate), against the
critical-path bound; and the figures read back from a run's logs."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.generate import family_parents
from lowbuild.run.placement import critical_path, simulate

# Per-image build times (s) of the seed family, cold, on this kind of machine: what the
# simulation samples from when no measured ones are given.
DEFAULT_BUILD_TIMES: tuple[float, ...] = (22.0, 9.0, 14.0, 60.0, 45.0, 35.0, 12.0, 4.0)
DEFAULT_HANDOVER_S = 1.0
ENDPOINT_COUNTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Family:
    order: tuple[str, ...]
    needs: Mapping[str, tuple[str, ...]]
    durations: Mapping[str, float]


def generated_family(
    count: int = 500, *, build_times: Sequence[float] = DEFAULT_BUILD_TIMES, seed: int = 7
) -> Family:
    """The plan benchmark's family shape (generate.family_parents), each image's build
    time drawn (deterministically) from `build_times`."""
    rng = random.Random(seed)
    parents = family_parents(count)
    order = tuple(f"img{index:04d}" for index in range(count))
    needs = {
        name: (() if parent is None else (order[parent],))
        for name, parent in zip(order, parents, strict=True)
    }
    durations = {name: rng.choice(list(build_times)) for name in order}
    return Family(order, needs, durations)


def width(family: Family) -> int:
    """The most images that ever build at once when nothing waits for a slot (one
    endpoint per image, handovers free): more endpoints than that cannot help."""
    unlimited = simulate(
        family.order, family.needs, family.durations, dict.fromkeys(family.order, 1)
    )
    events = sorted(
        [(p.start, 1) for p in unlimited.placed.values()]
        + [(p.end, -1) for p in unlimited.placed.values()]
    )
    running = peak = 0
    for _, step in events:  # ends sort before starts at the same instant
        running += step
        peak = max(peak, running)
    return peak


@dataclass(frozen=True)
class ScalingRow:
    endpoints: int
    makespan: float
    critical_path: float
    work: float  # every build's seconds added up
    handovers: int

    @property
    def ratio(self) -> float:
        """Makespan over the critical path: the goal's figure."""
        return self.makespan / self.critical_path if self.critical_path else float("inf")

    @property
    def bound(self) -> float:
        """No schedule on this many slots ends sooner: the critical path, or all the
        work spread evenly."""
        return max(self.critical_path, self.work / self.endpoints)

    @property
    def over_bound(self) -> float:
        """How close the placement gets on this many endpoints (1.0: optimal)."""
        return self.makespan / self.bound if self.bound else float("inf")


def scaling(
    family: Family, *, handover_s: float, counts: Sequence[int], jobs: int = 1
) -> list[ScalingRow]:
    """The family's simulated makespan over each number of endpoints (`jobs` each)."""
    bound = critical_path(family.order, family.needs, family.durations)
    rows = []
    for count in counts:
        endpoints = {f"e{i:02d}": jobs for i in range(count)}
        run = simulate(
            family.order, family.needs, family.durations, endpoints, handover_s=handover_s
        )
        work = sum(family.durations.values()) / jobs
        rows.append(ScalingRow(count, run.makespan, bound, work, run.handovers))
    return rows


_HANDED = re.compile(r"handed over from \S+ to \S+ as \S+ in ([0-9.]+)s")
_PUSHED = re.compile(r"^pushed to \S+ \(sha256:[0-9a-f]+\) in ([0-9.]+)s", re.MULTILINE)


def logged_seconds(logs: Path) -> tuple[list[float], list[float]]:
    """From a run's log directory: each handover's seconds (pull by digest, check, tag)
    and each handover push's seconds."""
    handed: list[float] = []
    pushed: list[float] = []
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        handed += [float(s) for s in _HANDED.findall(text)]
        pushed += [float(s) for s in _PUSHED.findall(text)]
    return handed, pushed
