"""The run's trace (run/trace.py) and what the report makes of a run (run/insight.py,
run/pages.py): pure logic, on spans and records made here."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lowbuild.errors import UsageError
from lowbuild.run.insight import RECORD_SCHEMA, RunFiles, critical_path, find_run, report_data
from lowbuild.run.pages import family_nodes, graph_svg, render_report
from lowbuild.run.report import RUN_RECORD, RunLogs
from lowbuild.run.trace import TRACE_FILE, Trace, spans, track_names


def test_spans_nest_on_the_slot_a_thread_holds_and_slots_are_reused() -> None:
    trace = Trace("lowbuild build")
    started = threading.Barrier(2)

    def work(name: str) -> None:
        with trace.slot("build"), trace.span(name, "image", image=name):
            started.wait()
            with trace.span("engine build", "phase"):
                time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    work_c = threading.Thread(target=lambda: _alone(trace, "c"))
    work_c.start()
    work_c.join()
    document = trace.to_json()
    names = track_names(document)
    by_name = {(s["name"], s["tid"]): s for s in spans(document)}
    images = {s["args"]["image"]: s["tid"] for s in spans(document) if s["cat"] == "image"}
    # a and b ran at once: two slots; c ran after them: it takes slot 1 again
    assert sorted(names[images[n]] for n in ("a", "b")) == ["build 1", "build 2"]
    assert names[images["c"]] == "build 1"
    for image in ("a", "b"):
        outer = by_name[(image, images[image])]
        inner = by_name[("engine build", images[image])]
        assert outer["ts"] <= inner["ts"]
        assert inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]


def _alone(trace: Trace, name: str) -> None:
    with trace.slot("build"), trace.span(name, "image", image=name):
        pass


def test_a_span_that_raises_is_kept_with_its_error_and_the_error_goes_on() -> None:
    trace = Trace("x")
    with pytest.raises(RuntimeError), trace.span("build", "run"):
        raise RuntimeError("the engine died\nsecond line")
    [span] = spans(trace.to_json())
    assert span["args"] == {"error": "the engine died"}
    assert span["dur"] >= 0


def test_the_document_is_chrome_trace_json_with_named_ordered_tracks(tmp_path: Path) -> None:
    trace = Trace("lowbuild build")
    with trace.span("plan", "run"):
        pass
    with trace.slot("test"), trace.span("a", "test", image="a", passed=True, detail=""):
        pass
    with trace.slot("build"), trace.span("a", "image", image="a"):
        pass
    path = tmp_path / TRACE_FILE
    trace.write(path)
    document = json.loads(path.read_text())
    assert document["displayTimeUnit"] == "ms"
    for event in document["traceEvents"]:
        assert event["ph"] in ("X", "M")
        if event["ph"] == "X":
            assert isinstance(event["ts"], int) and isinstance(event["dur"], int)
            assert "detail" not in event["args"]  # empty values are left out
    order = {
        e["args"]["name"]: next(
            m["args"]["sort_index"]
            for m in document["traceEvents"]
            if m["name"] == "thread_sort_index" and m["tid"] == e["tid"]
        )
        for e in document["traceEvents"]
        if e["name"] == "thread_name"
    }
    assert sorted(order, key=order.__getitem__) == ["lowbuild", "build 1", "test 1"]
    assert [p.name for p in tmp_path.iterdir()] == [TRACE_FILE]  # no temp file left


def test_run_logs_write_the_trace_when_they_close_even_after_an_error(tmp_path: Path) -> None:
    logs = RunLogs(tmp_path / "logs", command="t")
    with pytest.raises(KeyboardInterrupt), logs, logs.trace.span("build", "run"):
        raise KeyboardInterrupt
    document = json.loads((logs.directory / TRACE_FILE).read_text())
    assert [s["name"] for s in spans(document)] == ["build"]
    assert not (logs.directory / RUN_RECORD).exists()  # only a finished run has a record


def _image(
    name: str, parents: list[str], start: float | None, end: float | None, state: str = "built"
) -> dict[str, Any]:
    return {"name": name, "parents": parents, "start": start, "end": end, "state": state}


def test_the_critical_path_follows_the_parent_that_finished_last() -> None:
    images = [
        _image("base", [], 0, 2),
        _image("jdk", ["base"], 2, 6),
        _image("nginx", ["base"], 2, 3),
        _image("tomcat", ["jdk"], 6, 9),
        _image("web", ["nginx"], 3, 4),
        _image("app", ["tomcat", "web"], 9, 10),
        _image("idle", [], None, None),  # up to date before the run: no span
    ]
    path, waits = critical_path(images)
    assert path == ["base", "jdk", "tomcat", "app"]
    assert {w.why for w in waits} == {"parent"}
    # found up to date: a check, not a wait; the path starts after it
    images[0]["state"] = "up-to-date"
    assert critical_path(images)[0] == ["jdk", "tomcat", "app"]
    assert critical_path([_image("x", [], None, None)]) == ([], [])


def test_spans_of_no_length_at_one_instant_do_not_make_the_path_go_round() -> None:
    images = [{**_image(n, [], 5.0, 5.0), "track": 1} for n in ("x", "y")]
    path, waits = critical_path(images)
    assert sorted(path) == ["x", "y"] and len(waits) == 1


def test_an_image_that_waited_for_a_job_slot_waited_for_the_image_holding_it() -> None:
    # One job: b and c are both children of a; c waited for b's slot, not for a.
    images = [
        {**_image("a", [], 0, 2), "track": 1},
        {**_image("b", ["a"], 2, 7), "track": 1},
        {**_image("c", ["a"], 7.1, 9), "track": 1},
        {**_image("d", [], 0, 1), "track": 2},  # another slot: no wait of c's
    ]
    path, waits = critical_path(images)
    assert path == ["a", "b", "c"]
    assert [(w.after, w.image, w.why) for w in waits] == [
        ("a", "b", "parent"),
        ("b", "c", "job slot"),
    ]


def _run_files(tmp_path: Path, detail: str = "ok") -> RunFiles:
    origin = 1_000.0
    trace = Trace("lowbuild build")
    trace._origin = origin  # a fixed origin: the spans below are placed by hand
    trace.add("plan", "run", origin, origin + 0.1)
    trace.add(
        "a", "image", origin + 0.1, origin + 2, track=1, args={"image": "a", "state": "built"}
    )
    trace.add("engine build", "phase", origin + 0.2, origin + 1.5, track=1)
    trace.add("a", "test", origin + 2, origin + 3, track=2, args={"image": "a"})
    trace.add("b", "image", origin + 2, origin + 4, track=1, args={"image": "b", "state": "built"})
    images = [
        {
            "name": "a",
            "parents": [],
            "bases": ["localhost/base:1"],
            "state": "built",
            "reasons": ["new image"],
            "detail": "",
            "image_id": "sha256:aa",
            "endpoint": None,
            "log": "a.log",
            "test": {"passed": False, "detail": detail, "seconds": 1.0},
            "push": [],
        },
        {
            "name": "b",
            "parents": ["a"],
            "bases": [],
            "state": "built",
            "reasons": [],
            "detail": "",
            "image_id": "sha256:bb",
            "endpoint": None,
            "log": "b.log",
            "test": None,
            "push": [],
        },
        {
            "name": "c",
            "parents": ["b"],
            "bases": [],
            "state": "blocked",
            "reasons": [],
            "detail": "blocked: b failed",
            "image_id": "",
            "endpoint": None,
            "log": "c.log",
            "test": None,
            "push": [],
        },
    ]
    record = {
        "schema": RECORD_SCHEMA,
        "command": "build",
        "run": "20260101-000000",
        "project": str(tmp_path),
        "engine": "podman",
        "started": origin,
        "ended": origin + 4.5,
        "images": images,
    }
    return RunFiles(tmp_path, record, trace.to_json())


def test_report_data_places_spans_sizes_and_the_critical_path(tmp_path: Path) -> None:
    sizes = {"sha256:aa": 5_000, "sha256:bb": 7_500, "localhost/base:1": 4_000}
    data = report_data(_run_files(tmp_path), sizes)
    by_name = {i["name"]: i for i in data["images"]}
    assert data["critical_path"] == ["a", "b"]
    assert data["duration"] == 4.5
    assert by_name["a"]["adds"] == 1_000 and by_name["b"]["adds"] == 2_500
    assert by_name["c"]["start"] is None and by_name["c"]["size"] is None
    assert by_name["c"]["reason"] == "blocked: b failed"
    assert by_name["a"]["reason"] == "new image"
    assert [s["name"] for s in by_name["a"]["steps"]] == ["engine build"]
    assert by_name["b"]["steps"] == []  # the phase on the same track belongs to a
    assert by_name["a"]["test"]["start"] == pytest.approx(2.0)
    assert data["counts"] == {"built": 2, "blocked": 1}
    assert [p["name"] for p in data["phases"]] == ["plan"]


def test_the_page_escapes_what_a_run_recorded_and_loads_nothing(tmp_path: Path) -> None:
    hostile = '<script>alert(1)</script><img src="http://example.invalid/x.png">'
    page = render_report(report_data(_run_files(tmp_path, detail=hostile), {}))
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    # nothing fetched: no src/href attributes, no url() in CSS, no @import
    assert not re.search(r"<[^>]*\s(src|href)=", page)
    assert "url(" not in page and "@import" not in page
    assert page.count('class="node ') == 4  # a, b, c and a's base
    assert len(re.findall(r'<rect class="bar state-built', page)) == 2


def test_the_graph_puts_each_node_right_of_its_deepest_parent() -> None:
    images = [
        {"name": "app", "parents": ["jdk", "base"], "bases": [], "state": "built"},
        {"name": "jdk", "parents": ["base"], "bases": [], "state": "up-to-date"},
        {"name": "base", "parents": [], "bases": ["debian:12"], "state": "pulled"},
    ]
    nodes = family_nodes(images)
    assert {n.id: n.state for n in nodes} == {
        "debian:12": "base",
        "base": "pulled",
        "jdk": "up-to-date",
        "app": "built",
    }
    svg = str(graph_svg(nodes))
    xs = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r'data-node="([^"]+)".*?<rect x="(\d+)"', svg)
    }
    assert xs["debian:12"] < xs["base"] < xs["jdk"] < xs["app"]
    assert svg.count('class="edge"') == 4  # debian→base, base→jdk, jdk→app, base→app


def test_find_run_says_what_is_missing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with pytest.raises(UsageError, match="no run recorded"):
        find_run(logs, None)
    (logs / "20260101-000000").mkdir(parents=True)
    with pytest.raises(UsageError, match="runs: 20260101-000000"):
        find_run(logs, "nope")
    with pytest.raises(UsageError, match=f"has no {RUN_RECORD}"):
        find_run(logs, "20260101-000000")
