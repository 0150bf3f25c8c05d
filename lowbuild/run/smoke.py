"""Smoke tests: does the built image do what its image.yaml says it does?

An HTTP test starts the image with its port published on loopback and polls
until the expected status and body text arrive. A command test runs a command
in a fresh container and checks its exit code and output. Each test has a time
limit, container start included (`timeout:`, defaults in lowbuild.spec.model):
past it the test fails with "timed out after N s", even when the engine command
itself hangs (it is killed). Containers are removed whatever happens; on failure
the container's log is part of the error.
"""

from __future__ import annotations

import dataclasses
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lowbuild.engines.base import LOG_AFTER_TIMEOUT_S, Engine, LogSink, RunningContainer
from lowbuild.errors import EngineTimedOut, LowbuildError, SmokeTestFailed
from lowbuild.run.trace import Trace
from lowbuild.spec.model import CommandTest, HttpTest, ImageSpec, Project
from lowbuild.spec.platforms import native_platform, split_key

if TYPE_CHECKING:
    from lowbuild.run.report import RunLogs

_SHOWN_COMMAND_CHARS = 120
EMULATION_SLOWDOWN = 8
"""How much longer a test of a foreign platform's variant may take: qemu user emulation
runs compute 3–8× slower than native (busybox sh, 1,000,000 additions: 1.5 s native,
11.7 s as arm64 under qemu on a two-core runner, container start included)."""
_PROBE_TIMEOUT_S = 5.0  # one HTTP request, at most (and never past the test's deadline)
_POLL_S = 0.1  # between probes: a refused connection on loopback costs next to nothing


@dataclass(frozen=True)
class SmokeResult:
    """A passed smoke test and what it saw, for the report."""

    summary: str
    seconds: float


def shown_command(command: Sequence[str]) -> str:
    """A test command on one line, for progress lines, tables and messages.

    A shell script (`command: "..."` is run as `sh -c <script>`) is shown as the script;
    the lines of a multi-line one are joined with " ⏎ ", and the whole is cut at 120
    characters with "…". The log under .lowbuild/logs/ keeps the full command.
    """
    if len(command) == 3 and tuple(command[:2]) == ("sh", "-c"):
        text = command[2]
    else:
        text = shlex.join(command)
    one_line = " ⏎ ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(one_line) > _SHOWN_COMMAND_CHARS:
        one_line = one_line[: _SHOWN_COMMAND_CHARS - 1].rstrip() + "…"
    return one_line


def run_smoke_test(
    engine: Engine,
    *,
    image: str,
    test: HttpTest | CommandTest,
    network: str | None = None,
    log: LogSink | None = None,
    cancel: threading.Event | None = None,
) -> SmokeResult:
    """Run `test` against `image`; raise SmokeTestFailed (with the container log) when it
    fails or does not finish within `test.timeout` seconds.

    `network` is the image's own (`network:`, the build's): a command test runs on it.
    An HTTP test needs a published port, which `none` and `host` discard, so it always
    runs on the engine's default network. `cancel` set (the run was interrupted): an HTTP
    test stops polling at once instead of at its deadline.
    """
    started = time.monotonic()
    if isinstance(test, HttpTest):
        summary = _http_test(engine, image=image, test=test, log=log, cancel=cancel)
    else:
        summary = _command_test(engine, image=image, test=test, network=network, log=log)
    return SmokeResult(summary=summary, seconds=time.monotonic() - started)


def _http_test(
    engine: Engine,
    *,
    image: str,
    test: HttpTest,
    log: LogSink | None,
    cancel: threading.Event | None = None,
) -> str:
    deadline = time.monotonic() + test.timeout
    import httpx  # here: ~25 ms to import, which a build without --test does not pay

    wanted = f"status {test.status}" + (f" with {test.expect!r} in the body" if test.expect else "")
    try:
        with engine.run(image=image, publish=[test.port], timeout=test.timeout) as container:
            host = f"[{container.host}]" if ":" in container.host else container.host  # IPv6
            url = f"http://{host}:{container.ports[test.port]}{test.path}"
            if log:
                log(f"smoke: GET {url} (container port {test.port}), expecting {test.status}")
            last = "no answer yet"
            # trust_env=False: a proxy from the environment must not see loopback probes.
            with httpx.Client(trust_env=False) as client:
                while (left := deadline - time.monotonic()) > 0:
                    if cancel is not None and cancel.is_set():
                        raise SmokeTestFailed(f"{image}: interrupted before it answered")
                    try:
                        response = client.get(url, timeout=min(_PROBE_TIMEOUT_S, left))
                    except httpx.TransportError as exc:
                        last = f"{type(exc).__name__}: {exc}"
                    else:
                        body = response.text
                        if response.status_code == test.status and (
                            test.expect is None or test.expect in body
                        ):
                            return f"GET {test.path} → {response.status_code}" + (
                                f", body has {test.expect!r}" if test.expect else ""
                            )
                        last = f"status {response.status_code}, body starts {body[:200]!r}"
                    time.sleep(max(0.0, min(_POLL_S, deadline - time.monotonic())))
            logs = _safe_logs(engine, container)
            raise SmokeTestFailed(
                f"{image}: GET {test.path} on port {test.port} timed out after "
                f"{test.timeout:g} s waiting for {wanted}; last: {last}"
                + _section("container log", logs)
            )
    except EngineTimedOut as exc:
        # The engine itself did not start (or inspect) the container in time.
        raise SmokeTestFailed(
            f"{image}: GET {test.path} on port {test.port} timed out after {test.timeout:g} s:"
            f" the container did not start in time ({shlex.join(exc.command)})"
        ) from exc


def _command_test(
    engine: Engine, *, image: str, test: CommandTest, network: str | None, log: LogSink | None
) -> str:
    shown = shown_command(test.command)
    if log:
        log(f"smoke: run {shown}")
        if "\n" in "".join(test.command):
            log(f"smoke: the whole command: {list(test.command)}")
    try:
        code, output = engine.run_once(
            image=image, command=test.command, network=network, timeout=test.timeout
        )
    except EngineTimedOut as exc:
        raise SmokeTestFailed(
            f"{image}: smoke command `{shown}` timed out after {test.timeout:g} s"
            + _section("output so far", exc.output)
        ) from exc
    if code != 0:
        raise SmokeTestFailed(
            f"{image}: smoke command `{shown}` exited {code}" + _section("output", output)
        )
    if test.expect is not None and test.expect not in output:
        raise SmokeTestFailed(
            f"{image}: smoke command `{shown}` did not print {test.expect!r}"
            + _section("output", output)
        )
    return f"{shown} → exit 0" + (f", output has {test.expect!r}" if test.expect else "")


def _safe_logs(engine: Engine, container: RunningContainer) -> str:
    """The container log for an error message, read briefly; never masks the original failure."""
    try:
        return engine.logs(container, timeout=LOG_AFTER_TIMEOUT_S)[-8000:]
    except LowbuildError as exc:
        return f"(could not read the container log: {exc})"


def _section(title: str, text: str) -> str:
    """`text` under a `--- title ---` line for a failure message; nothing when it is blank."""
    return f"\n--- {title} ---\n{text.rstrip()}" if text.strip() else f"\n(no {title})"


@dataclass(frozen=True)
class TestOutcome:
    """One image's smoke test, as the run reports it."""

    name: str
    passed: bool
    detail: str
    seconds: float


def smoke_test_family(
    project: Project,
    engine: Engine,
    names: Iterable[str],
    *,
    jobs: int,
    logs: RunLogs | None = None,
    on_result: Callable[[TestOutcome], None] = lambda result: None,
) -> dict[str, TestOutcome]:
    """Run the declared smoke test of each named image (those without one are left out),
    `jobs` at once; each result goes to `on_result` as it comes, and to its image's log."""
    with SmokeTester(project, engine, jobs=jobs, logs=logs, on_result=on_result) as tester:
        for name in names:
            tester.submit(name)
        return tester.results()


class SmokeTester:
    """Smoke tests started as images become ready (`submit`), `jobs` at once, while the
    rest of the family is still building or pulling: a test waits for its image only,
    not for the whole family. Use as a context manager: leaving it waits for the tests
    started, and on an error (an interrupt) cancels those not started yet."""

    def __init__(
        self,
        project: Project,
        engine: Engine,
        *,
        jobs: int,
        logs: RunLogs | None = None,
        on_result: Callable[[TestOutcome], None] = lambda result: None,
    ) -> None:
        self.project, self.engine, self.logs, self.on_result = project, engine, logs, on_result
        self._pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="smoke")
        self._futures: dict[str, Future[TestOutcome]] = {}
        self._cancel = threading.Event()

    def __enter__(self) -> SmokeTester:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:  # interrupted: running tests stop, the others never start
            self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)

    def submit(self, name: str, *, engine: Engine | None = None) -> None:
        """Start `name`'s smoke test (when it declares one, and only once), on `engine`
        (the endpoint holding the image; default: the tester's)."""
        spec = self.project.image(name)
        if spec.test is not None and name not in self._futures:
            self._futures[name] = self._pool.submit(self._one, name, spec, engine or self.engine)

    def results(self) -> dict[str, TestOutcome]:
        """Every submitted test's outcome, once all have ended, in the order submitted."""
        return {name: future.result() for name, future in self._futures.items()}

    def _one(self, name: str, spec: ImageSpec, engine: Engine) -> TestOutcome:
        """The test of `name` (an image, or a platform's variant: run under emulation when
        foreign, with its timeout scaled by EMULATION_SLOWDOWN)."""
        assert spec.test is not None
        started = time.monotonic()
        sink = self.logs.sink(name) if self.logs else None
        test = spec.test
        platform = split_key(name)[1]
        if platform is not None and platform != native_platform():
            test = dataclasses.replace(test, timeout=test.timeout * EMULATION_SLOWDOWN)
            if sink:
                sink(f"{platform} runs under emulation: timeout {test.timeout:g} s")
        trace = self.logs.trace if self.logs else Trace("")
        with trace.slot("test"), trace.span(name, "test", image=name) as args:
            try:
                result = run_smoke_test(
                    engine,
                    image=self.project.ref(name),
                    test=test,
                    network=spec.engine_network,
                    log=sink,
                    cancel=self._cancel,
                )
            except LowbuildError as exc:
                outcome = TestOutcome(name, False, str(exc), time.monotonic() - started)
                if sink:
                    sink(f"smoke test FAILED: {exc}")
            else:
                outcome = TestOutcome(name, True, result.summary, result.seconds)
                if sink:
                    sink(f"smoke test passed: {result.summary}")
            args.update(
                passed=outcome.passed, detail=(outcome.detail.splitlines() or [""])[0][:300]
            )
        self.on_result(outcome)
        return outcome
