"""Where a run's time went: the run's record (`run.json`, written beside its logs and its
trace) and what `lowbuild report` makes of them: the family graph coloured by state, the
timeline with its critical path, each image's size and what it adds over its parent, and
the smoke tests.

The record is written as the run ends and holds only what the run knew; sizes are asked
of the engine when the report is made (an `inspect` of the recorded image IDs, which
costs the build nothing), and an image removed since shows no size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lowbuild.errors import UsageError
from lowbuild.run.report import RUN_RECORD
from lowbuild.run.trace import TRACE_FILE, spans, track_names

if TYPE_CHECKING:
    from lowbuild.engines.base import Engine
    from lowbuild.plan.graph import FamilyGraph
    from lowbuild.plan.planner import Plan
    from lowbuild.run.publish import PushOutcome
    from lowbuild.run.report import RunLogs
    from lowbuild.run.scheduler import Outcome
    from lowbuild.run.smoke import TestOutcome
    from lowbuild.spec.model import Project

RECORD_SCHEMA = "lowbuild-run/1"


def run_record(
    command: str,
    project: Project,
    graph: FamilyGraph,
    engine: str,
    outcomes: Mapping[str, Outcome],
    tests: Mapping[str, TestOutcome],
    pushes: Sequence[PushOutcome],
    logs: RunLogs,
    *,
    plan: Plan | None = None,
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """The record of a run of `command` (build, test or push) over `names` (a build: the
    images of its plan)."""
    reasons = {image.name: list(image.reasons) for image in plan.images} if plan else {}
    images = []
    for name in list(outcomes) or list(names):
        node = graph.nodes[name]
        outcome = outcomes.get(name)
        test = tests.get(name)
        images.append(
            {
                "name": name,
                "ref": project.ref(name),
                "parents": list(node.needs),
                "bases": list(node.external),
                "state": outcome.state if outcome else None,
                "reasons": reasons.get(name, []),
                "detail": outcome.detail if outcome else "",
                "image_id": outcome.image_id if outcome else "",
                "started": outcome.started if outcome else None,
                "ended": outcome.ended if outcome else None,
                "endpoint": (outcome.endpoint or None) if outcome else None,
                "log": logs.path(name).name,
                "test": None
                if test is None
                else {"passed": test.passed, "detail": test.detail, "seconds": test.seconds},
                "push": [p.to_json() for p in pushes if p.image == name],
            }
        )
    return {
        "schema": RECORD_SCHEMA,
        "command": command,
        "run": logs.directory.name,
        "project": project.name,
        "engine": engine,
        "started": logs.trace.origin,
        "ended": time.time(),
        "images": images,
    }


def earlier_build_times(current: Path, *, look_back: int = 20) -> dict[str, float]:
    """How long each image took to build in the newest earlier run that built any (of
    the last `look_back` runs beside `current`, the run's log directory), from its
    record; {} when none did."""
    try:
        runs = sorted(
            (p for p in current.parent.iterdir() if p.is_dir() and p != current),
            key=lambda p: p.name,
            reverse=True,
        )[:look_back]
    except OSError:
        return {}
    for run in runs:
        try:
            record = json.loads((run / RUN_RECORD).read_text(encoding="utf-8"))
            times = {
                i["name"]: float(i["ended"]) - float(i["started"])
                for i in record.get("images", ())
                if i.get("state") == "built" and i.get("started") and i.get("ended")
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        if times:
            return times
    return {}


@dataclass(frozen=True)
class RunFiles:
    """One run's directory and what it holds."""

    directory: Path
    record: dict[str, Any]
    trace: dict[str, Any]


def find_run(logs_root: Path, run: str | None) -> RunFiles:
    """The run `run` (a directory name under `logs_root`, or a path), default the latest;
    a clear error when it is not there or holds no record (a run older than the report,
    or one killed before it ended)."""
    if run is None:
        directory = logs_root / "latest"
        if not directory.exists():
            raise UsageError(f"no run recorded under {logs_root}: run `lowbuild build` first")
    else:
        given = Path(run)
        directory = given if given.is_dir() else logs_root / run
        if not directory.is_dir():
            known = (
                sorted(p.name for p in logs_root.iterdir() if p.is_dir())
                if logs_root.is_dir()
                else []
            )
            hint = f"; runs: {', '.join(known[-5:])}" if known else ""
            raise UsageError(f"no run {run!r} under {logs_root}{hint}")
    directory = directory.resolve()
    record_path, trace_path = directory / RUN_RECORD, directory / TRACE_FILE
    if not record_path.is_file():
        raise UsageError(
            f"{directory} has no {RUN_RECORD}: that run ended before writing it "
            "(interrupted, or made by an older lowbuild); its trace, if any, is "
            f"{trace_path}"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        trace = (
            json.loads(trace_path.read_text(encoding="utf-8"))
            if trace_path.is_file()
            else {"traceEvents": []}
        )
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the run in {directory}: {exc}") from exc
    if record.get("schema") != RECORD_SCHEMA:
        raise UsageError(f"{record_path} is not a {RECORD_SCHEMA} record")
    return RunFiles(directory, record, trace)


@dataclass(frozen=True)
class Wait:
    """One link of the critical path: `image` started when `after` ended, because it is
    built from it ("parent") or because it took the job slot `after` freed ("job slot")."""

    after: str
    image: str
    why: str


SLOT_SLACK = 0.5
"""Seconds between one image ending and the next starting on its slot that still count
as the second waiting for the first (the scheduler looks every 0.2 s)."""


def critical_path(images: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Wait]]:
    """The chain of waits that set the run's length: from the image that ended last,
    back through whatever it waited for (the parent that ended last, or the image that
    held its job slot until just before it started, whichever ended later) to an image
    that waited for nothing. Only images that did work (built, pulled or failed: an
    image found up to date is a check, not a wait). Returns the names, first to last,
    and each link with its reason."""
    ran = {
        i["name"]: i
        for i in images
        if i.get("start") is not None
        and i.get("end") is not None
        and i.get("state") in ("built", "pulled", "failed")
    }
    if not ran:
        return [], []
    current = max(ran.values(), key=lambda i: i["end"])
    path, waits = [current["name"]], []
    seen = {current["name"]}
    while True:
        start = current["start"]
        candidates = [
            (ran[p], "parent") for p in current.get("parents", ()) if p in ran and p not in seen
        ]
        candidates += [
            (other, "job slot")
            for other in ran.values()
            if other["name"] not in seen
            and other.get("track") is not None
            and other.get("track") == current.get("track")
            and start - SLOT_SLACK <= other["end"] <= start + 1e-6
        ]
        if not candidates:
            break
        before, why = max(candidates, key=lambda c: (c[0]["end"], c[1] == "parent"))
        waits.append(Wait(before["name"], current["name"], why))
        current = before
        seen.add(current["name"])
        path.append(current["name"])
    return path[::-1], waits[::-1]


def report_data(files: RunFiles, sizes: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """What the report shows, as plain data (`lowbuild report --json`). `sizes`: image ID
    or base ref → bytes, as the engine says (None: not asked)."""
    record, trace = files.record, files.trace
    origin = float(record["started"])
    by_image: dict[str, dict[str, Any]] = {}
    phases: list[dict[str, Any]] = []
    for span in spans(trace):
        entry = {
            "name": span["name"],
            "cat": span.get("cat", ""),
            "start": span["ts"] / 1e6,
            "duration": span["dur"] / 1e6,
            "track": span.get("tid", 0),
            "args": span.get("args", {}),
        }
        if entry["cat"] in ("image", "test", "push"):
            image = entry["args"].get("image", entry["name"])
            by_image.setdefault(image, {})[entry["cat"]] = entry
        else:
            phases.append(entry)
    images = []
    sizes = sizes or {}
    names = {i["name"] for i in record["images"]}
    ids = {i["name"]: _image_key(i) for i in record["images"]}
    for item in record["images"]:
        name = item["name"]
        spanned = by_image.get(name, {})
        built = spanned.get("image")
        size = sizes.get(ids[name] or "")
        parent = item["parents"][0] if item["parents"] else None
        if parent is not None:
            parent_size = sizes.get(ids.get(parent) or "") if parent in names else None
        else:
            parent_size = sizes.get(item["bases"][0]) if item["bases"] else 0
        adds = size - parent_size if size is not None and parent_size is not None else None
        steps = []
        if built is not None:  # the phases that ran inside this image's span, on its track
            b0, b1 = built["start"], built["start"] + built["duration"]
            steps = [
                {"name": p["name"], "start": p["start"], "duration": p["duration"]}
                for p in phases
                if p["cat"] == "phase" and p["track"] == built["track"] and b0 <= p["start"] <= b1
            ]
        images.append(
            {
                "name": name,
                "state": item["state"],
                "parents": item["parents"],
                "bases": item["bases"],
                "reason": _why(item),
                "image_id": item.get("image_id") or "",
                "endpoint": item.get("endpoint"),
                "log": item.get("log"),
                "start": built["start"] if built else None,
                "end": built["start"] + built["duration"] if built else None,
                "track": built["track"] if built else None,
                "steps": steps,
                "size": size,
                "adds": adds,
                "test": _test_of(item, spanned.get("test")),
                "push": item.get("push", []),
            }
        )
    path, waits = critical_path(images)
    for image in images:
        image["critical"] = image["name"] in path
    tracks = track_names(trace)
    ended = float(record.get("ended") or origin)
    return {
        "run": record["run"],
        "command": record["command"],
        "engine": record["engine"],
        "project": record.get("project", ""),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(origin)),
        "duration": round(ended - origin, 3),
        "counts": _counts(images),
        "critical_path": path,
        "critical_waits": [{"after": w.after, "image": w.image, "why": w.why} for w in waits],
        "critical_seconds": _chain_seconds(images, path),
        "images": images,
        "phases": [p for p in phases if p["cat"] == "run"],
        "tracks": {str(tid): name for tid, name in sorted(tracks.items())},
    }


def _why(item: Mapping[str, Any]) -> str:
    """Why the image was built (the plan's reasons), or what stopped it: a failure's
    first line, the image a blocked one waited for."""
    detail = (str(item.get("detail") or "").strip().splitlines() or [""])[0]
    reasons = "; ".join(item.get("reasons") or [])
    if item.get("state") == "failed":
        return f"{reasons}: failed: {detail}" if reasons else f"failed: {detail}"
    if item.get("state") in ("blocked", "skipped"):
        return detail
    return reasons or detail


def _test_of(item: Mapping[str, Any], span: Mapping[str, Any] | None) -> dict[str, Any] | None:
    test = item.get("test")
    if test is None:
        return None
    return {
        "passed": test["passed"],
        "detail": test["detail"],
        "seconds": round(float(test["seconds"]), 3),
        "start": span["start"] if span else None,
        "end": span["start"] + span["duration"] if span else None,
    }


def _counts(images: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for image in images:
        state = image["state"] or "not built by this run"
        counts[state] = counts.get(state, 0) + 1
    return counts


def _chain_seconds(images: Sequence[Mapping[str, Any]], path: Sequence[str]) -> float:
    """From the first image of the critical path starting to the last one ending."""
    chain = [i for i in images if i["name"] in path]
    if not chain:
        return 0.0
    return round(float(max(i["end"] for i in chain) - min(i["start"] for i in chain)), 3)


def _image_key(item: Mapping[str, Any]) -> str:
    """How to ask the engine for a recorded image: by the ID a build recorded (none for
    one that failed: its ref names an older image); a test or push run, which records
    no state, by its ref."""
    if item.get("state") is None:
        return str(item.get("ref") or "")
    return str(item.get("image_id") or "")


def image_sizes(engine: Engine, files: RunFiles) -> dict[str, int | None]:
    """Each recorded image ID's and external base's size, in one engine call: what the
    report shows (an image removed since: None)."""
    asked = []
    for item in files.record["images"]:
        if _image_key(item):
            asked.append(_image_key(item))
        asked.extend(item.get("bases") or ())
    found = engine.inspect_sized(list(dict.fromkeys(asked)))
    return {ref: info.size if info is not None else None for ref, info in found.items()}
