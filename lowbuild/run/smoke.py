"""Smoke tests: does the built image do what its image.yaml says it does?

An HTTP test starts the image with its port published on loopback and polls
until the expected status and body text arrive (or the timeout passes). A
command test runs a command in a fresh container and checks its exit code and
output. Containers are removed whatever happens; on failure the container's
log is part of the error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from lowbuild.engines.base import Engine, LogSink, RunningContainer
from lowbuild.errors import LowbuildError, SmokeTestFailed
from lowbuild.spec.model import CommandTest, HttpTest


@dataclass(frozen=True)
class SmokeResult:
    """A passed smoke test and what it saw, for the report."""

    summary: str
    seconds: float


def run_smoke_test(
    engine: Engine,
    *,
    image: str,
    test: HttpTest | CommandTest,
    network: str | None = None,
    log: LogSink | None = None,
) -> SmokeResult:
    """Run `test` against `image`; raise SmokeTestFailed (with the container log) when it fails.

    `network` is the image's own (`network:`, the build's): a command test runs on it.
    An HTTP test needs a published port, which `none` and `host` discard, so it always
    runs on the engine's default network.
    """
    started = time.monotonic()
    if isinstance(test, HttpTest):
        summary = _http_test(engine, image=image, test=test, log=log)
    else:
        summary = _command_test(engine, image=image, test=test, network=network, log=log)
    return SmokeResult(summary=summary, seconds=time.monotonic() - started)


def _http_test(engine: Engine, *, image: str, test: HttpTest, log: LogSink | None) -> str:
    with engine.run(image=image, publish=[test.port]) as container:
        host_port = container.ports[test.port]
        url = f"http://127.0.0.1:{host_port}{test.path}"
        if log:
            log(f"smoke: GET {url} (container port {test.port}), expecting {test.status}")
        last = "no answer yet"
        deadline = time.monotonic() + test.timeout
        # trust_env=False: a proxy from the environment must not see loopback probes.
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while time.monotonic() < deadline:
                try:
                    response = client.get(url)
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
                time.sleep(0.5)
        logs = _safe_logs(engine, container)
        raise SmokeTestFailed(
            f"{image}: GET {test.path} on port {test.port} did not give status {test.status}"
            + (f" with {test.expect!r} in the body" if test.expect else "")
            + f" within {test.timeout:g}s; last: {last}\n--- container log ---\n{logs}"
        )


def _command_test(
    engine: Engine, *, image: str, test: CommandTest, network: str | None, log: LogSink | None
) -> str:
    if log:
        log(f"smoke: run {list(test.command)}")
    code, output = engine.run_once(image=image, command=test.command, network=network)
    if code != 0:
        raise SmokeTestFailed(
            f"{image}: smoke command {list(test.command)} exited {code}\n--- output ---\n{output}"
        )
    if test.expect is not None and test.expect not in output:
        raise SmokeTestFailed(
            f"{image}: smoke command {list(test.command)} did not print {test.expect!r}\n"
            f"--- output ---\n{output}"
        )
    return f"{' '.join(test.command)} → exit 0" + (
        f", output has {test.expect!r}" if test.expect else ""
    )


def _safe_logs(engine: Engine, container: RunningContainer) -> str:
    """The container log for an error message; never masks the original failure."""
    try:
        return engine.logs(container)[-8000:]
    except LowbuildError as exc:
        return f"(could not read the container log: {exc})"
