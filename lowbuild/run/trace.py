"""A trace of every run, in the Chrome trace-event format (what Perfetto, chrome://tracing
and Bazel's `--profile` use): `trace.json` beside the run's logs.

Each span is a complete event ("ph": "X") with a start ("ts") and a duration ("dur") in
microseconds since the run started. Spans sit on tracks ("tid"): the run's own track for
its phases (plan, fetch, build, push), and one track per job slot: a piece of work takes
the lowest free slot of its group (`build`, `test`, `push`, or `<endpoint> build` over
several endpoints) for as long as it runs, so the tracks show what ran side by side.
Spans opened inside a slot, on the thread doing that work, nest in its track.

Recording is a list append under a lock: it costs microseconds per span, and the file is
written once, when the run ends.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lowbuild.sources.cache import write_atomically

TRACE_FILE = "trace.json"
RUN_TRACK = "lowbuild"
"""The run's own track (tid 0): plan, fetch, the family's build, the pushes."""


class Trace:
    """The spans of one run. Thread-safe."""

    def __init__(self, command: str) -> None:
        self.command = command
        self._origin = time.time()
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._tracks: dict[str, int] = {RUN_TRACK: 0}
        self._busy: dict[str, set[int]] = {}  # slot group → slot numbers taken
        self._local = threading.local()

    @property
    def origin(self) -> float:
        """The run's start, as time.time()."""
        return self._origin

    def _track(self, name: str) -> int:
        with self._lock:
            return self._tracks.setdefault(name, len(self._tracks))

    @contextmanager
    def slot(self, group: str) -> Iterator[None]:
        """Hold the lowest free slot of `group` for the current thread: its spans go on
        that slot's track until the block ends."""
        with self._lock:
            taken = self._busy.setdefault(group, set())
            number = next(n for n in range(1, len(taken) + 2) if n not in taken)
            taken.add(number)
        previous = getattr(self._local, "track", None)
        self._local.track = self._track(f"{group} {number}")
        try:
            yield
        finally:
            self._local.track = previous
            with self._lock:
                self._busy[group].discard(number)

    @contextmanager
    def span(self, name: str, cat: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Record the block as span `name` of category `cat` on the current track. Yields
        its arguments, for the block to add what it learns (a state, an image ID); a block
        that raises gets `error` (the first line of what it raised)."""
        track = getattr(self._local, "track", None)
        track = 0 if track is None else track
        start = time.time()
        try:
            yield args
        except BaseException as exc:
            if "error" not in args:
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                args["error"] = lines[0][:300]
            raise
        finally:
            self.add(name, cat, start, time.time(), track=track, args=args)

    def add(
        self,
        name: str,
        cat: str,
        start: float,
        end: float,
        *,
        track: int = 0,
        args: dict[str, Any] | None = None,
    ) -> None:
        """A span from time.time() stamps."""
        event = {
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": round((start - self._origin) * 1e6),
            "dur": max(0, round((end - start) * 1e6)),
            "pid": os.getpid(),
            "tid": track,
            "args": {k: v for k, v in (args or {}).items() if v not in (None, "")},
        }
        with self._lock:
            self._events.append(event)

    def to_json(self) -> dict[str, Any]:
        """The trace document: spans in start order, then the names of the process and of
        each track (metadata events)."""
        pid = os.getpid()
        with self._lock:
            spans = sorted(self._events, key=lambda e: (e["ts"], -e["dur"]))
            tracks = dict(self._tracks)
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": self.command}}
        ]

        def order(name: str) -> tuple[bool, str, int]:  # the run's track, then by group
            group, _, number = name.rpartition(" ")
            return (name != RUN_TRACK, group, int(number) if number.isdigit() else 0)

        for index, name in enumerate(sorted(tracks, key=order)):
            tid = tracks[name]
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
            )
            meta.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": pid,
                    "tid": tid,
                    "args": {"sort_index": index},
                }
            )
        return {
            "traceEvents": spans + meta,
            "displayTimeUnit": "ms",
            "otherData": {"command": self.command, "started": self._origin},
        }

    def write(self, path: Path) -> None:
        """Write the trace to `path` atomically (a reader never sees half of it)."""
        write_atomically(path, json.dumps(self.to_json(), separators=(",", ":")))


def spans(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans of a trace document (its complete events), in start order."""
    return [e for e in document.get("traceEvents", ()) if e.get("ph") == "X"]


def track_names(document: dict[str, Any]) -> dict[int, str]:
    """tid → track name, from a trace document's metadata."""
    return {
        e["tid"]: e["args"]["name"]
        for e in document.get("traceEvents", ())
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
