"""Several build hosts: one family split over engine endpoints, parents handed over
through a registry.

How an image reaches the endpoint that builds its child (`Handover.bring`):
1. the endpoint that built it pushes it, by image ID, to the handover registry under
   its fingerprint tag (`<prefix>/<name>:lb-…`, as the registry cache names it), and
   the manifest digest is asked of the registry itself (a HEAD request);
2. the child's endpoint pulls `<prefix>/<name>@<digest>`, checks that the image ID it
   got is the one built (a VerificationError, exit 4, if not: nothing is tagged), and
   tags it with the family's names, which the child's FROM uses: no Dockerfile is
   rewritten, and the build itself never pulls.

Image IDs are config digests, the same on every engine for the same image, so a
parent built by podman has the same ID on a docker endpoint, and its children the
same fingerprints (the engine is not in the fingerprint: plan/fingerprint.py).

An endpoint whose command fails and which then no longer answers a version query is
lost (scheduler.EndpointLost): the images running there are started once more on
another endpoint, and nothing new goes there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lowbuild.engines.base import Engine, LogSink
from lowbuild.engines.commands import stop_commands_of
from lowbuild.engines.endpoints import Hosts, endpoint_engine
from lowbuild.errors import EngineError, LowbuildError, UsageError, VerificationError
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL
from lowbuild.plan.planner import Plan
from lowbuild.redact import redact
from lowbuild.run.placement import simulate
from lowbuild.sources.registry import cache_ref, registry_digest
from lowbuild.spec.model import Project, Registry
from lowbuild.spec.platforms import split_key

ANSWER_TIMEOUT_S = 10.0
"""How long an endpoint has to answer a version query before the answer counts as none."""

WATCH_INTERVAL_S = 5.0
"""How often the watchdog asks each endpoint with work running whether it answers."""

WATCH_MISSES = 2
"""Unanswered questions in a row after which the watchdog gives an endpoint up: one slow
answer on a busy machine is not a lost endpoint."""


class HandoverFailed(LowbuildError):
    """A parent could not be handed over to the endpoint that builds its child."""


@dataclass
class Fleet:
    """The endpoints of a run, each with its engine, and the handover registry (None with
    a single endpoint: nothing is handed over)."""

    hosts: Hosts
    engines: dict[str, Engine]  # endpoint name → its engine, in declared order
    registry: Registry | None
    lost: dict[str, str] = field(default_factory=dict)  # endpoint given up → why

    @classmethod
    def connect(cls, hosts: Hosts, registry: Registry | None, *, handover: bool = True) -> Fleet:
        """The engines of `hosts`; `handover` (a build): several endpoints need `registry`."""
        if handover and len(hosts.endpoints) > 1 and registry is None:
            raise UsageError(
                f"{len(hosts.endpoints)} endpoints hand parents over through a registry: set "
                "`registry:` in the hosts file, or give a registry cache "
                "(--cache-to, or `cache:` in lowbuild.yaml)"
            )
        engines = {endpoint.name: endpoint_engine(endpoint) for endpoint in hosts.endpoints}
        return cls(hosts=hosts, engines=engines, registry=registry)

    def jobs(self) -> dict[str, int]:
        return {endpoint.name: endpoint.jobs for endpoint in self.hosts.endpoints}

    def why_lost(self, endpoint: str, *, timeout: float = ANSWER_TIMEOUT_S) -> str | None:
        """None when `endpoint` answers a version query within `timeout` seconds, else why
        it does not (at once for one given up already)."""
        if endpoint in self.lost:
            return self.lost[endpoint]
        answers: list[str | None] = []

        def ask() -> None:
            try:
                self.engines[endpoint].version()
            except LowbuildError as exc:
                lines = str(exc).strip().splitlines()
                answers.append(f"it no longer answers ({lines[-1] if lines else exc})")
            else:
                answers.append(None)

        # A thread, so that a hung endpoint costs `timeout`, not the command's own limit;
        # a question left hanging is killed with the rest when the endpoint is given up.
        asking = threading.Thread(target=ask, name=f"ask-{endpoint}", daemon=True)
        asking.start()
        asking.join(timeout)
        if not answers:
            return f"it does not answer a version query within {timeout:g} s"
        return answers[0]

    def give_up(self, endpoint: str, reason: str) -> int:
        """Count `endpoint` lost for the rest of the run and stop every engine command
        running there (their work then fails with EndpointLost and is started once more
        elsewhere); how many commands were stopped."""
        self.lost.setdefault(endpoint, reason)
        return stop_commands_of(self.engines[endpoint].cli)


class Watchdog:
    """While a build runs, asks each endpoint with work running whether it still
    answers; one that misses WATCH_MISSES questions in a row is given up (Fleet.give_up).
    This is how an endpoint that hangs, without dropping its connection, is noticed."""

    def __init__(self, fleet: Fleet, busy: Callable[[], set[str]]) -> None:
        self.fleet, self.busy = fleet, busy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        misses: dict[str, int] = {}
        while not self._stop.wait(WATCH_INTERVAL_S):
            for endpoint in sorted(self.busy() - set(self.fleet.lost)):
                reason = self.fleet.why_lost(endpoint)
                misses[endpoint] = misses.get(endpoint, 0) + 1 if reason else 0
                if reason and misses[endpoint] >= WATCH_MISSES and not self._stop.is_set():
                    self.fleet.give_up(endpoint, reason)


@dataclass
class Handover:
    """Which endpoint holds which family image, and how to bring one where it is needed."""

    project: Project
    fleet: Fleet
    holders: dict[str, dict[str, str]] = field(default_factory=dict)  # name → endpoint → ID
    published: dict[str, tuple[str, str]] = field(default_factory=dict)  # name → (ID, digest)
    published_by: dict[str, str] = field(default_factory=dict)  # name → endpoint that pushed

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}

    def _image_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._image_locks.setdefault(name, threading.Lock())

    def record(self, name: str, endpoint: str, image_id: str) -> None:
        """`endpoint` holds `name` as `image_id` now."""
        with self._lock:
            self.holders.setdefault(name, {})[endpoint] = image_id

    def holding(self, name: str, image_id: str) -> list[str]:
        """The endpoints known to hold `name` as `image_id`, in declared order."""
        with self._lock:
            held = dict(self.holders.get(name, {}))
        return [e for e in self.fleet.engines if held.get(e) == image_id]

    def by_digest(self, name: str) -> str | None:
        """`<prefix>/<name>@<digest>` of the copy handed over, if it was."""
        found = self.published.get(name)
        if found is None or self.fleet.registry is None:
            return None
        return f"{self.fleet.registry.prefix}/{split_key(name)[0]}@{found[1]}"

    def publish(self, name: str, endpoint: str, image_id: str, sink: LogSink) -> str:
        """Push `name` (`image_id`, held by `endpoint`) to the handover registry under its
        fingerprint tag; its manifest digest, as the registry says. Once per image ID."""
        registry = self.fleet.registry
        assert registry is not None  # only with several endpoints
        with self._image_lock(f"publish:{name}"):
            done = self.published.get(name)
            if done is not None and done[0] == image_id:
                return done[1]
            engine = self.fleet.engines[endpoint]
            info = engine.inspect_image(image_id)
            fingerprint = info.labels.get(FINGERPRINT_LABEL) if info else None
            if not fingerprint:
                raise HandoverFailed(
                    f"{name}: {endpoint} holds no image {image_id} with a fingerprint to hand over"
                )
            tag = cache_ref(registry, name, fingerprint)
            started = time.monotonic()
            try:
                reported = engine.push(image_id, tag, tls_verify=registry.tls_verify, log=sink)
            except EngineError as exc:
                lines = redact(str(exc)).strip().splitlines()
                raise HandoverFailed(
                    f"{name}: built on {endpoint}, but the handover registry {registry.prefix} "
                    f"did not take it, so no other endpoint can build on it: "
                    f"{lines[-1] if lines else exc}"
                ) from exc
            asked = registry_digest(tag, tls_verify=registry.tls_verify)
            digest = asked or reported
            if asked is not None and asked != reported:
                sink(f"note: {endpoint} reported {reported}, the registry serves {asked}")
            sink(f"pushed to {tag} ({digest}) in {time.monotonic() - started:.2f}s")
            self.published[name] = (image_id, digest)
            self.published_by[name] = endpoint
            return digest

    def bring(self, name: str, image_id: str, to: str, sink: LogSink) -> bool:
        """Make `to` hold family image `name` as `image_id` (pulled by digest from the
        handover registry and checked); False when it already did."""
        with self._image_lock(name):
            if to in self.holding(name, image_id):
                return False
            engine = self.fleet.engines[to]
            ref = self.project.ref(name)
            info = engine.inspect_image(ref)
            if info is not None and info.id == image_id:
                self.record(name, to, image_id)
                return False
            registry = self.fleet.registry
            assert registry is not None  # more than one endpoint
            started = time.monotonic()
            done = self.published.get(name)
            if done is not None and done[0] == image_id:  # no endpoint needed to ask
                digest, source = done[1], self.published_by.get(name, "the registry")
            else:
                live = [e for e in self.holding(name, image_id) if e not in self.fleet.lost]
                sources = live or self._find(name, image_id, ref)
                if not sources:
                    raise HandoverFailed(
                        f"{name} ({image_id}) is needed on {to}, but no endpoint that answers "
                        "holds it, and it was never pushed to the handover registry"
                    )
                source = sources[0]
                digest = self.publish(name, source, image_id, sink)
            # A variant (`web@linux-arm64`) by its image's name: a digest names one
            # platform's image, which every engine pulls whatever the host's platform.
            remote = f"{registry.prefix}/{split_key(name)[0]}@{digest}"
            try:
                pulled = engine.pull(remote, tls_verify=registry.tls_verify, log=sink)
            except EngineError as exc:
                lines = redact(str(exc)).strip().splitlines()
                raise HandoverFailed(
                    f"{name}: {to} could not pull {remote}: {lines[-1] if lines else exc}"
                ) from exc
            if pulled is None:
                raise HandoverFailed(f"{name}: the handover registry has no {remote}")
            if pulled != image_id:
                raise VerificationError(
                    f"{name}: {to} pulled {remote} as {pulled}, but {source} built "
                    f"{image_id}; nothing was tagged"
                )
            for local in self.project.refs_for(name):
                engine.tag(image_id, local)
            self.record(name, to, image_id)
            sink(
                f"{name} handed over from {source} to {to} as {remote} "
                f"in {time.monotonic() - started:.2f}s"
            )
            return True

    def _find(self, name: str, image_id: str, ref: str) -> list[str]:
        """Ask every endpoint for `ref` (an image this run did not see: outside the plan)."""
        found = []
        for endpoint, engine in self.fleet.engines.items():
            if endpoint in self.fleet.lost:
                continue  # it would not answer
            info = engine.inspect_image(ref)
            if info is not None and info.id == image_id:
                self.record(name, endpoint, image_id)
                found.append(endpoint)
        return found


def intended_placement(
    plan: Plan, jobs: Mapping[str, int], holders: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """Where each image of `plan` is meant to go (`plan --hosts`): an up-to-date image
    where it is held; the others as the scheduler would place them if every build took
    the same time (a pull from the registry cache a tenth of it). The real run places
    by the same rule as builds really end, so it may differ."""
    held: dict[str, list[str]] = {}
    for image in plan.images:
        if image.action == "up-to-date" and image.existing_id:
            found = [e for e in jobs if holders.get(image.name, {}).get(e) == image.existing_id]
            if found:
                held[image.name] = found
    durations = {image.name: 0.1 if image.action == "pull" else 1.0 for image in plan.images}
    run = simulate(
        [image.name for image in plan.images],
        {image.name: image.needs for image in plan.images},
        durations,
        jobs,
        held=held,
    )
    placement = {name: endpoints[0] for name, endpoints in held.items()}
    placement.update({name: placed.endpoint for name, placed in run.placed.items()})
    return placement
