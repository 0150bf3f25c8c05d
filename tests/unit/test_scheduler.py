from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from lowbuild.errors import LowbuildError
from lowbuild.run.scheduler import Event, WorkResult, run_in_order

# base ─┬─ jdk ── tomcat
#       ├─ nginx
#       └─ haproxy
NEEDS: dict[str, tuple[str, ...]] = {
    "base": (),
    "jdk": ("base",),
    "tomcat": ("jdk",),
    "nginx": ("base",),
    "haproxy": ("base",),
}
ORDER = ["base", "haproxy", "jdk", "nginx", "tomcat"]


def _work(fail: set[str] = frozenset(), delay: float = 0.05):  # type: ignore[assignment]
    started: list[str] = []
    lock = threading.Lock()

    def work(name: str, cancel: threading.Event) -> WorkResult:
        with lock:
            started.append(name)
        time.sleep(delay)
        if name in fail:
            raise LowbuildError(f"RUN failed in {name}")
        return WorkResult(state="built", image_id=f"sha256:{name}")

    return work, started


def test_children_start_only_after_their_parent_finished() -> None:
    work, _ = _work()
    outcomes = run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=4)
    for name, needs in NEEDS.items():
        for need in needs:
            assert outcomes[name].started >= outcomes[need].ended  # type: ignore[operator]
    assert all(o.state == "built" for o in outcomes.values())


def test_independent_branches_run_concurrently() -> None:
    work, _ = _work(delay=0.3)
    outcomes = run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=3)
    nginx, haproxy, jdk = outcomes["nginx"], outcomes["haproxy"], outcomes["jdk"]
    # the three children of base overlap in time
    assert max(nginx.started, haproxy.started, jdk.started) < min(  # type: ignore[type-var]
        nginx.ended,
        haproxy.ended,
        jdk.ended,  # type: ignore[type-var]
    )


def test_job_limit_is_respected() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(name: str, cancel: threading.Event) -> WorkResult:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return WorkResult(state="built")

    flat: dict[str, tuple[str, ...]] = {f"img{i}": () for i in range(8)}
    run_in_order(order=sorted(flat), needs=flat, work=work, jobs=2)
    assert peak == 2


def test_failure_blocks_only_descendants_and_names_the_parent() -> None:
    work, started = _work(fail={"jdk"})
    outcomes = run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=2)
    assert outcomes["jdk"].state == "failed"
    assert "RUN failed in jdk" in outcomes["jdk"].detail
    assert outcomes["tomcat"].state == "blocked"
    assert outcomes["tomcat"].blocked_by == "jdk"
    assert "tomcat" not in started
    assert outcomes["nginx"].state == "built"
    assert outcomes["haproxy"].state == "built"


def test_failure_of_root_blocks_grandchildren_by_the_root() -> None:
    work, started = _work(fail={"base"})
    outcomes = run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=2)
    assert started == ["base"]
    assert {o.blocked_by for n, o in outcomes.items() if n != "base"} == {"base"}


def test_fail_fast_starts_nothing_new_after_a_failure() -> None:
    work, started = _work(fail={"jdk"}, delay=0.05)
    outcomes = run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=1, fail_fast=True)
    assert outcomes["jdk"].state == "failed"
    # with one job, jdk (the longest chain) runs right after base; nothing starts after
    # it fails
    assert started == ["base", "jdk"]
    assert {outcomes[n].state for n in ("haproxy", "nginx")} == {"skipped"}
    assert outcomes["tomcat"].state in {"skipped", "blocked"}


def test_parent_outside_the_selection_counts_as_done() -> None:
    work, started = _work()
    outcomes = run_in_order(order=["tomcat"], needs={"tomcat": ("jdk",)}, work=work, jobs=1)
    assert outcomes["tomcat"].state == "built"
    assert started == ["tomcat"]


def test_events_report_every_start_and_end() -> None:
    events: list[Event] = []
    work, _ = _work(fail={"jdk"})
    run_in_order(order=ORDER, needs=NEEDS, work=work, jobs=2, on_event=events.append)
    ends = {e.name for e in events if e.kind == "end"}
    starts = {e.name for e in events if e.kind == "start"}
    assert ends == set(ORDER)
    assert starts == set(ORDER) - {"tomcat"}


def test_interrupt_sets_cancel_and_waits_for_running_work() -> None:
    saw_cancel = threading.Event()

    def work(name: str, cancel: threading.Event) -> WorkResult:
        if name == "base":
            return WorkResult(state="built")
        cancel.wait(5)
        if cancel.is_set():
            saw_cancel.set()
        return WorkResult(state="built")

    # Ctrl-C is a SIGINT to the process while the scheduler waits on running work.
    def on_event(event: Event) -> None:
        if event.kind == "start" and event.name == "nginx":
            threading.Timer(0.1, _interrupt_main).start()

    with pytest.raises(KeyboardInterrupt):
        run_in_order(
            order=["base", "nginx"],
            needs={"base": (), "nginx": ("base",)},
            work=work,
            jobs=2,
            on_event=on_event,
        )
    assert saw_cancel.is_set()


def _interrupt_main() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_image_with_two_family_inputs_waits_for_both_and_is_blocked_by_either() -> None:
    needs = {"a": (), "b": (), "c": ("a", "b")}
    work, started = _work(fail={"b"})
    outcomes = run_in_order(order=["a", "b", "c"], needs=needs, work=work, jobs=2)
    assert "c" not in started
    assert outcomes["c"].state == "blocked"
    assert outcomes["c"].blocked_by == "b"


def test_the_longest_remaining_path_starts_first_when_slots_are_scarce() -> None:
    # One job. After root: `leaf` comes first in the given order, but `mid` heads the
    # longer chain (mid → tail), so it starts first; equal paths keep the given order.
    order = ["root", "leaf", "mid", "tail", "other"]
    needs = {"leaf": ["root"], "mid": ["root"], "tail": ["mid"], "other": ["root"]}
    started: list[str] = []

    def work(name: str, cancel: threading.Event) -> WorkResult:
        started.append(name)
        return WorkResult(state="built")

    run_in_order(order=order, needs=needs, work=work, jobs=1)
    assert started == ["root", "mid", "leaf", "tail", "other"]


def test_an_earlier_runs_times_order_the_ready_images() -> None:
    from lowbuild.run.scheduler import remaining_paths, run_placed

    order = ["base", "haproxy", "jdk", "tomcat"]
    needs = {"haproxy": ["base"], "jdk": ["base"], "tomcat": ["jdk"]}
    weights = {"base": 20.0, "haproxy": 60.0, "jdk": 20.0, "tomcat": 8.0}
    assert remaining_paths(order, needs, weights) == {
        "base": 80.0,
        "haproxy": 60.0,
        "jdk": 28.0,
        "tomcat": 8.0,
    }
    started: list[str] = []

    def work(name: str, endpoint: str, cancel: threading.Event) -> WorkResult:
        started.append(name)
        return WorkResult(state="built")

    # haproxy (60 s) before jdk → tomcat (28 s), though jdk heads the longer chain of images
    run_placed(order=order, needs=needs, work=work, endpoints={"": 1}, weights=weights)
    assert started == ["base", "haproxy", "jdk", "tomcat"]
    started.clear()
    run_placed(order=order, needs=needs, work=work, endpoints={"": 1})
    assert started == ["base", "jdk", "haproxy", "tomcat"]  # by count: jdk's chain is longer
