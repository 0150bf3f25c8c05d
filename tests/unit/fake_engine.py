"""An engine in memory, for the planner's and builder's logic: images are records of the
build requests that made them, and every call is counted. The real engines are tested
against podman, docker, buildx and buildah in tests/integration; this one only stands in
where the question is "what does lowbuild decide", not "what does the engine do"."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lowbuild.engines.base import BuildRequest, EngineName, ImageInfo, LogSink
from lowbuild.errors import EngineError
from lowbuild.plan.fingerprint import FINGERPRINT_LABEL


@dataclass
class FakeEngine:
    """Holds images by ref. A build's image ID is a hash of its fingerprint label, so
    building the same inputs again gives the same ID, as a reproducible engine does."""

    name: EngineName = "podman"
    images: dict[str, ImageInfo] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # refs whose build fails
    built: list[str] = field(default_factory=list)  # first tag of each build, in order
    inspections: int = 0  # engine calls made to inspect images
    pushed: dict[str, str] = field(default_factory=dict)  # destination → manifest digest
    push_failures: list[str] = field(default_factory=list)  # stderr of the next failed pushes
    registry: dict[str, ImageInfo] = field(default_factory=dict)  # what pushes put there
    pull_failures: list[str] = field(default_factory=list)  # stderr of the next failed pulls
    pulls: list[str] = field(default_factory=list)  # refs asked for, found or not
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_image(self, ref: str, *, labels: dict[str, str] | None = None) -> ImageInfo:
        info = ImageInfo(id=_id_of(ref), tags=(ref,), labels=labels or {})
        self.images[ref] = info
        return info

    def build(self, request: BuildRequest, *, log: LogSink | None = None) -> str:
        first = request.tags[0]
        if log is not None:
            log(f"fake build of {first}")
        if first in self.failing:
            raise EngineError(["fake", "build", first], 1, f"the build of {first} broke")
        labels = dict(request.labels)
        info = ImageInfo(
            id=_id_of(labels[FINGERPRINT_LABEL]), tags=tuple(request.tags), labels=labels
        )
        with self._lock:
            self.built.append(first)
            for tag in request.tags:
                self.images[tag] = info
        return info.id

    def inspect_image(self, ref: str) -> ImageInfo | None:
        with self._lock:
            self.inspections += 1
            return self.images.get(ref)

    def inspect_images(self, refs: Sequence[str]) -> dict[str, ImageInfo | None]:
        with self._lock:
            self.inspections += 1
            return {ref: self.images.get(ref) for ref in refs}

    def push(
        self,
        ref: str,
        destination: str,
        *,
        tls_verify: bool = True,
        log: LogSink | None = None,
        sign: object = None,
    ) -> str:
        if self.push_failures:
            raise EngineError(["fake", "push", destination], 125, self.push_failures.pop(0))
        digest = _id_of("manifest of " + self.images[ref].id)
        self.pushed[destination] = digest
        self.registry[destination] = self.images[ref]
        return digest

    def pull(self, ref: str, *, tls_verify: bool = True, log: LogSink | None = None) -> str | None:
        self.pulls.append(ref)
        if self.pull_failures:
            raise EngineError(["fake", "pull", ref], 125, self.pull_failures.pop(0))
        info = self.registry.get(ref)
        if info is None:
            return None
        self.images[ref] = info
        return info.id

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self.images.pop(ref, None)

    def tag(self, ref: str, new_ref: str) -> None:
        self.images[new_ref] = self.images[ref]

    def run_containers(self, run_id: str) -> frozenset[str]:
        return frozenset()

    def remove_containers(self, ids: Iterable[str]) -> None:
        pass


def _id_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
