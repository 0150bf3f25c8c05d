"""run_placed: the scheduler over several endpoints, each with its own job limit, work
placed where its parent is, and work lost with its endpoint started once more elsewhere."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from test_scheduler import NEEDS, ORDER  # base ─┬─ jdk ── tomcat, ├─ nginx, └─ haproxy

from lowbuild.errors import EXIT_ENVIRONMENT, LowbuildError
from lowbuild.run.scheduler import EndpointLost, WorkResult, run_placed


class Recorder:
    """Work that sleeps, notes where each image ran, and how many ran at once where."""

    def __init__(self, *, delay: float = 0.05, lose: dict[str, set[str]] | None = None) -> None:
        self.delay = delay
        self.lose = lose or {}  # endpoint → images whose work there loses the endpoint
        self.ran: list[tuple[str, str]] = []
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.lock = threading.Lock()

    def work(self, name: str, endpoint: str, cancel: threading.Event) -> WorkResult:
        with self.lock:
            self.ran.append((name, endpoint))
            self.running[endpoint] = self.running.get(endpoint, 0) + 1
            self.peak[endpoint] = max(self.peak.get(endpoint, 0), self.running[endpoint])
        try:
            time.sleep(self.delay)
            if name in self.lose.get(endpoint, set()):
                raise EndpointLost(endpoint, "it no longer answers (connection refused)")
            return WorkResult(state="built", image_id=f"sha256:{name}")
        finally:
            with self.lock:
                self.running[endpoint] -= 1

    def held_by(self) -> dict[str, str]:
        return dict(self.ran)  # the last endpoint each ran on


def parent_first(recorder: Recorder) -> object:
    """prefer(): the endpoint where each need ran (as the builder's Handover records)."""

    def prefer(name: str) -> Sequence[str]:
        where = recorder.held_by()
        return [where[need] for need in NEEDS[name] if need in where]

    return prefer


def test_each_endpoint_keeps_its_own_job_limit() -> None:
    recorder = Recorder(delay=0.2)
    outcomes = run_placed(order=ORDER, needs=NEEDS, work=recorder.work, endpoints={"a": 1, "b": 2})
    assert all(o.state == "built" for o in outcomes.values())
    assert recorder.peak.get("a", 0) <= 1 and recorder.peak.get("b", 0) <= 2
    # jdk, nginx, haproxy were ready together: three slots in all, all three used
    assert sum(recorder.peak.values()) == 3
    assert {o.endpoint for o in outcomes.values()} == {"a", "b"}


def test_a_child_goes_where_its_parent_is_when_that_endpoint_is_free() -> None:
    recorder = Recorder()
    chain = {"base": (), "jdk": ("base",), "tomcat": ("jdk",)}
    outcomes = run_placed(
        order=list(chain),
        needs=chain,
        work=recorder.work,
        endpoints={"a": 1, "b": 1},
        prefer=lambda name: [recorder.held_by()[n] for n in chain[name]],
    )
    # base lands on the first declared endpoint (ties), and the chain follows it
    assert [outcomes[n].endpoint for n in chain] == ["a", "a", "a"]


def test_a_child_does_not_wait_for_its_busy_parent_endpoint() -> None:
    recorder = Recorder(delay=0.2)
    outcomes = run_placed(
        order=ORDER,
        needs=NEEDS,
        work=recorder.work,
        endpoints={"a": 1, "b": 1},
        prefer=parent_first(recorder),  # type: ignore[arg-type]
    )
    children = [outcomes[n] for n in ("haproxy", "jdk", "nginx")]
    assert {o.endpoint for o in children} == {"a", "b"}  # spread, not queued on a
    first_two = sorted(children, key=lambda o: o.started or 0)[:2]
    assert abs((first_two[0].started or 0) - (first_two[1].started or 0)) < 0.15


def test_work_lost_with_its_endpoint_runs_once_more_elsewhere() -> None:
    recorder = Recorder(lose={"a": {"base"}})
    outcomes = run_placed(order=ORDER, needs=NEEDS, work=recorder.work, endpoints={"a": 2, "b": 2})
    assert all(o.state == "built" for o in outcomes.values())
    assert outcomes["base"].endpoint == "b" and outcomes["base"].tries == 1
    assert "endpoint a lost" in outcomes["base"].detail
    assert "retried on b" in outcomes["base"].detail
    # nothing more was started on the lost endpoint
    assert [name for name, endpoint in recorder.ran if endpoint == "a"] == ["base"]


def test_lost_twice_fails_with_both_reasons_and_blocks_only_its_descendants() -> None:
    recorder = Recorder(lose={e: {"jdk"} for e in ("a", "b", "c")})
    outcomes = run_placed(
        order=ORDER, needs=NEEDS, work=recorder.work, endpoints={"a": 1, "b": 1, "c": 1}
    )
    jdk = outcomes["jdk"]
    assert jdk.state == "failed" and jdk.exit_code == EXIT_ENVIRONMENT
    assert jdk.detail.count(" lost: ") == 2 and jdk.tries == 2  # tried twice, not thrice
    assert [name for name, _ in recorder.ran].count("jdk") == 2
    assert outcomes["tomcat"].state == "blocked" and outcomes["tomcat"].blocked_by == "jdk"
    for name in ("base", "nginx", "haproxy"):
        assert outcomes[name].state == "built"


def test_when_every_endpoint_is_lost_what_is_left_fails_saying_so() -> None:
    recorder = Recorder(lose={"a": {"base"}, "b": {"base"}})
    outcomes = run_placed(order=ORDER, needs=NEEDS, work=recorder.work, endpoints={"a": 1, "b": 1})
    assert outcomes["base"].state == "failed"
    assert all(outcomes[n].state == "blocked" for n in ("jdk", "nginx", "haproxy", "tomcat"))


def test_an_ordinary_failure_is_not_retried() -> None:
    calls: list[str] = []

    def work(name: str, endpoint: str, cancel: threading.Event) -> WorkResult:
        calls.append(name)
        if name == "jdk":
            raise LowbuildError("RUN failed in jdk")
        return WorkResult(state="built")

    outcomes = run_placed(order=ORDER, needs=NEEDS, work=work, endpoints={"a": 1, "b": 1})
    assert calls.count("jdk") == 1
    assert outcomes["jdk"].state == "failed" and outcomes["jdk"].tries == 0
    assert outcomes["tomcat"].state == "blocked"


def test_work_can_say_the_image_is_held_elsewhere() -> None:
    def work(name: str, endpoint: str, cancel: threading.Event) -> WorkResult:
        return WorkResult(state="up-to-date", image_id="sha256:x", endpoint="b")

    outcomes = run_placed(order=["base"], needs={"base": ()}, work=work, endpoints={"a": 1, "b": 1})
    assert outcomes["base"].endpoint == "b"
