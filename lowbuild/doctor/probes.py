"""Running each engine the way a build would: is it installed, what version, does dockerd
answer (buildx), does a trivial build and a run of the result work? The probe image is
`FROM scratch` with a static program doctor writes itself (doctor/probe_binary.py) and one
exec-form `RUN` of it: no base image, no shell, no network, so an engine is judged on its
own, on a host with an empty image store. A failed step's message goes through `diagnose`,
so its check carries the fix of the first known cause.

A project's external base images are a separate question (`family_base_checks`): one
missing is not the engine's fault, and says how to bring it in.

Every engine command goes through the engine classes (`version`, `inspect_image`, `build`,
`run_once`, `remove_image`); none is built here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbuild.doctor.checks import Check, rootless_checks, rootless_network_works
from lowbuild.doctor.diagnosis import diagnose
from lowbuild.doctor.facts import HostFacts, read_host_facts
from lowbuild.doctor.probe_binary import PROBE_MARKER, probe_executable
from lowbuild.engines.base import (
    ENGINE_NAMES,
    MISSING_BASE_HINT,
    OWNED_LABEL,
    BuildRequest,
    Engine,
    EngineName,
)
from lowbuild.engines.detect import REQUIRED_BINARIES, check_version, engine_by_name
from lowbuild.engines.docker import DockerEngine
from lowbuild.engines.endpoints import Endpoint, endpoint_engine
from lowbuild.errors import EngineError, EngineUnavailable, LowbuildError
from lowbuild.spec.model import Registry
from lowbuild.spec.platforms import architecture, split_key

PROBE_PROGRAM = "lowbuild-probe"
# Exec form: scratch has no shell. The RUN proves build containers start; the run, that
# the committed image (with the program COPY put in it) runs.
PROBE_DOCKERFILE = (
    f'FROM scratch\nCOPY {PROBE_PROGRAM} /{PROBE_PROGRAM}\nRUN ["/{PROBE_PROGRAM}"]\n'
)

INSTALL_HINTS: dict[EngineName, str] = {
    "podman": "install podman and runc (Debian/Ubuntu: `apt-get install podman runc`)",
    "docker": "install the docker engine (Debian/Ubuntu: `apt-get install docker.io`)",
    "buildx": "install the docker engine and its buildx plugin (Debian 13+/Ubuntu: "
    "`apt-get install docker.io docker-buildx`)",
    "buildah": "install buildah and podman (Debian/Ubuntu: `apt-get install buildah podman "
    "runc`; lowbuild runs buildah's images with podman)",
}


@dataclass(frozen=True)
class EngineReport:
    """Everything doctor found for one engine; `ok` means a build and a run both worked.
    `family_bases`: for a working engine and a project, one check per external base image
    (its name is the image's), which does not change `ok`."""

    engine: EngineName
    ok: bool
    version: str | None
    checks: tuple[Check, ...]
    family_bases: tuple[Check, ...] = ()
    endpoint: Endpoint | None = None  # `doctor --hosts`: the endpoint examined
    # A multi-platform family: whether this host emulates each foreign platform (host-wide:
    # the same for every engine; does not change `ok`).
    emulation: tuple[Check, ...] = ()

    @property
    def title(self) -> str:
        """How the report is headed: the engine, or the endpoint and its engine."""
        return self.engine if self.endpoint is None else self.endpoint.describe()

    def to_json(self) -> dict[str, Any]:
        document = {
            "engine": self.engine,
            "ok": self.ok,
            "version": self.version,
            "checks": [_check_json(c) for c in self.checks],
            "family_bases": [_check_json(c) for c in self.family_bases],
            "emulation": [_check_json(c) for c in self.emulation],
        }
        if self.endpoint is not None:
            document["endpoint"] = self.endpoint.name
            document["url"] = self.endpoint.url
        return document


def _check_json(check: Check) -> dict[str, Any]:
    return {"name": check.name, "ok": check.ok, "detail": check.detail, "fix": check.fix}


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-600:]


def _engine_message(exc: LowbuildError) -> str:
    """What the engine printed (an EngineError's stderr), else the error's own text."""
    return exc.stderr if isinstance(exc, EngineError) else str(exc)


def _generic_fix(engine: EngineName) -> str:
    what = "dockerd's log" if engine in ("docker", "buildx") else "`podman info`"
    return f"no known cause matched; read the engine's message above and {what}"


@dataclass
class _Findings:
    """Checks collected while examining one engine (mutable only while it is being built)."""

    engine: EngineName
    facts: HostFacts
    checks: list[Check] = field(default_factory=list)

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, exc: LowbuildError, *, fallback_fix: str) -> None:
        """A failed step: the engine's last words, the fix of the first known cause (or
        the fallback), then one check per cause found."""
        message = _engine_message(exc)
        causes = diagnose(engine=self.engine, message=message, facts=self.facts)
        fix = causes[0].fix if causes else fallback_fix
        self.checks.append(Check(name, False, _tail(message), fix))
        known = {c.name for c in self.checks}
        self.checks += [c for c in causes if c.name not in known]

    def report(self, *, ok: bool, version: str | None) -> EngineReport:
        return EngineReport(self.engine, ok, version, tuple(self.checks))


def examine_engine(
    name: EngineName,
    *,
    facts: HostFacts,
    make_engine: Callable[[str], Engine] = engine_by_name,
    bases: Mapping[str, Sequence[str]] | None = None,
) -> EngineReport:
    """Check `name` step by step (installed, version, build, run); stop at the first
    failing step, since every later one depends on it."""
    findings = _Findings(name, facts)
    missing = [b for b in REQUIRED_BINARIES[name] if shutil.which(b) is None]
    if missing:
        findings.checks.append(
            Check(
                "installed",
                False,
                f"{' and '.join(missing)} not found on PATH",
                INSTALL_HINTS[name],
            )
        )
        return findings.report(ok=False, version=None)
    findings.passed("installed", ", ".join(str(shutil.which(b)) for b in REQUIRED_BINARIES[name]))
    if name in ("podman", "buildah"):
        findings.checks += rootless_checks(facts)

    engine = make_engine(name)
    try:
        version = engine.version()
    except LowbuildError as exc:
        findings.failed("version", exc, fallback_fix=_generic_fix(name))
        return findings.report(ok=False, version=None)
    too_old = check_version(name, version)
    findings.checks.append(
        Check("version", not too_old, too_old or version, "upgrade it" if too_old else "")
    )
    if too_old:
        return findings.report(ok=False, version=version)
    if name == "buildx" and not _daemon_answers(findings):
        return findings.report(ok=False, version=version)

    program = probe_executable()
    if program is None:
        findings.checks.append(
            Check(
                "probe",
                False,
                f"doctor has no probe program for this architecture ({platform.machine()})",
                "build one image by hand (`lowbuild build IMAGE`) to see whether the engine works",
            )
        )
        return findings.report(ok=False, version=version)
    ok = _build_and_run(engine, findings, program=program, network=probe_network(name, facts))
    report = findings.report(ok=ok, version=version)
    if ok and bases:
        report = dataclasses.replace(report, family_bases=family_base_checks(engine, bases))
    return report


def family_base_checks(engine: Engine, bases: Mapping[str, Sequence[str]]) -> tuple[Check, ...]:
    """Whether `engine`'s store has each of a project's external base images (`bases`: the
    image → the family images that build on it), asked in one inspect. A missing one fails
    its own check with how to bring it in: the engine works, the family cannot build yet."""
    found = engine.inspect_images(sorted(bases))
    checks = []
    for ref in sorted(bases):
        users = ", ".join(bases[ref])
        info = found.get(ref)
        platforms = {split_key(user)[1] for user in bases[ref]} - {None}
        wrong = sorted(
            p for p in platforms if p and info and info.architecture not in ("", architecture(p))
        )
        if info is None:
            detail = f"not in {engine.name}'s image store; {users} cannot build until it is"
            checks.append(Check(ref, False, detail, MISSING_BASE_HINT))
        elif wrong:
            on = ", ".join(user for user in bases[ref] if split_key(user)[1] in wrong)
            detail = f"built for {info.architecture}, but used for {', '.join(wrong)} by {on}"
            fix = "declare that platform's image under `bases:` (`platforms:`) in lowbuild.yaml"
            checks.append(Check(ref, False, detail, fix))
        else:
            checks.append(Check(ref, True, f"{info.id[:19]}, used by {users}"))
    return tuple(checks)


def probe_network(name: EngineName, facts: HostFacts) -> str | None:
    """The network doctor's probe build and run use: the engine's default, except for a
    rootless podman/buildah whose default network cannot start (the "rootless network" check
    says so). Then `none`, what such a user's builds run with, so that the probe still
    shows whether building and running work at all."""
    if name in ("podman", "buildah") and facts.rootless and not rootless_network_works(facts):
        return "none"
    return None


def _daemon_answers(findings: _Findings) -> bool:
    """buildx's version is the plugin's; whether dockerd answers is asked the way the
    docker engine asks its version (the daemon's)."""
    try:
        server = DockerEngine().version()
    except LowbuildError as exc:
        findings.failed("dockerd", exc, fallback_fix=_generic_fix("docker"))
        return False
    findings.passed("dockerd", f"dockerd {server}")
    return True


def _build_and_run(
    engine: Engine, findings: _Findings, *, program: bytes, network: str | None
) -> bool:
    """Build the probe image and run it, then remove it; False at the first failure."""
    tag = f"localhost/lowbuild/doctor-probe:{findings.engine}-{secrets.token_hex(4)}"
    on = f" (with --network {network})" if network else ""
    with tempfile.TemporaryDirectory(prefix="lowbuild-doctor-") as scratch:
        context = Path(scratch)
        (context / "Dockerfile").write_text(PROBE_DOCKERFILE)
        (context / PROBE_PROGRAM).write_bytes(program)
        (context / PROBE_PROGRAM).chmod(0o755)
        try:
            request = BuildRequest(
                context=context, tags=[tag], labels={OWNED_LABEL: "true"}, network=network
            )
            image_id = engine.build(request)
        except LowbuildError as exc:
            findings.failed("build", exc, fallback_fix=_generic_fix(findings.engine))
            return False
    try:
        findings.passed("build", f"FROM scratch, a COPY and a RUN built {image_id[:19]}{on}")
        try:
            code, output = engine.run_once(
                image=tag, command=[f"/{PROBE_PROGRAM}"], network=network
            )
        except LowbuildError as exc:
            findings.failed("run", exc, fallback_fix=_generic_fix(findings.engine))
            return False
        if code != 0 or PROBE_MARKER not in output:
            findings.checks.append(
                Check(
                    "run",
                    False,
                    f"the probe program exited {code} and printed {_tail(output)!r}, "
                    f"expected {PROBE_MARKER!r}",
                    _generic_fix(findings.engine),
                )
            )
            return False
        findings.passed("run", f"the probe program ran and printed {PROBE_MARKER!r}{on}")
        return True
    finally:
        # A leftover probe tag is harmless; the report matters more than its removal.
        with contextlib.suppress(LowbuildError):
            engine.remove_image(tag, force=True)


def examine_endpoint(
    endpoint: Endpoint,
    *,
    facts: HostFacts,
    bases: Mapping[str, Sequence[str]] | None = None,
    registry: Registry | None = None,
) -> EngineReport:
    """Check one endpoint: it answers (its engine's version), it builds and runs the
    probe, it has the family's bases, and it can reach the handover `registry` (asked
    for a tag that does not exist: "no such manifest" is the registry answering)."""
    findings = _Findings(endpoint.engine, facts)
    engine = endpoint_engine(endpoint)
    try:
        version = engine.version()
    except LowbuildError as exc:
        message = _tail(_engine_message(exc))
        findings.checks.append(
            Check(
                "reachable",
                False,
                message,
                f"start the engine's service there, or check the URL ({endpoint.declared})",
            )
        )
        return dataclasses.replace(findings.report(ok=False, version=None), endpoint=endpoint)
    findings.passed("reachable", f"{endpoint.url or 'local'} answers: {endpoint.engine} {version}")
    too_old = check_version(endpoint.engine, version)
    if too_old:
        findings.checks.append(Check("version", False, too_old, "upgrade it"))
        return dataclasses.replace(findings.report(ok=False, version=version), endpoint=endpoint)
    program = probe_executable()
    ok = program is not None and _build_and_run(engine, findings, program=program, network=None)
    if ok and registry is not None:
        ok = _registry_reachable(engine, registry, findings)
    report = dataclasses.replace(findings.report(ok=ok, version=version), endpoint=endpoint)
    if ok and bases:
        report = dataclasses.replace(report, family_bases=family_base_checks(engine, bases))
    return report


def _registry_reachable(engine: Engine, registry: Registry, findings: _Findings) -> bool:
    """Whether `engine` can pull from `registry`: it is asked for a tag no one pushes."""
    ref = registry.ref("lowbuild-doctor", f"absent-{secrets.token_hex(4)}")
    try:
        found = engine.pull(ref, tls_verify=registry.tls_verify)
    except LowbuildError as exc:
        plain = (
            ""
            if registry.tls_verify
            else (
                "; for a plain-http registry, dockerd needs it in daemon.json `insecure-registries`"
            )
        )
        findings.checks.append(
            Check(
                "registry",
                False,
                _tail(_engine_message(exc)),
                f"make {registry.prefix} reachable from the endpoint{plain}",
            )
        )
        return False
    if found is not None:  # someone pushed that very tag: still, the registry answered
        with contextlib.suppress(LowbuildError):
            engine.remove_image(ref)
    findings.passed("registry", f"pulls from {registry.prefix}")
    return True


def examine_engines(
    engines: Sequence[EngineName] = ENGINE_NAMES,
    *,
    facts: HostFacts | None = None,
    make_engine: Callable[[str], Engine] = engine_by_name,
    bases: Mapping[str, Sequence[str]] | None = None,
) -> list[EngineReport]:
    """One report per engine, in the order asked; `bases` (a project's external base
    images) are looked for on each engine that works."""
    host = facts or read_host_facts()
    return [
        examine_engine(name, facts=host, make_engine=make_engine, bases=bases) for name in engines
    ]


def require_working(reports: Sequence[EngineReport], *, asked: str | None) -> None:
    """Raise EngineUnavailable when the asked engine (or, if none was asked, every engine)
    does not work; the message names each failed engine's first failing check."""
    if any(r.ok for r in reports):
        return
    reasons = []
    for report in reports:
        first = next((c for c in report.checks if not c.ok), None)
        reasons.append(
            f"{report.engine}: {first.name + ': ' + first.detail if first else 'not ok'}"
        )
    subject = f"engine {asked!r} does not work here" if asked else "no engine works here"
    raise EngineUnavailable(subject + ":\n  " + "\n  ".join(reasons))
