"""The trace of a real run and its report, opened in a real headless Chromium.

A four-image family (a → b → c, a → d) is built on podman with its smoke tests; the
trace left beside the logs is checked span by span, and `lowbuild report` writes the
page, which Chromium (Debian's, driven by Selenium through Debian's chromedriver) loads
from disk: no console error, no request but the file itself, one node per image and
base, one bar per image built. A screenshot (and a PDF print) of each page checked is
left in the test's tmp dir, its path printed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runs import remove_namespace_images, run_lowbuild
from json_outputs import conforming

BASE = "localhost/lowbuild/busybox:latest"
FAMILY = {"a": None, "b": "a", "c": "b", "d": "a"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _write_image(root: Path, namespace: str, name: str, parent: str | None) -> None:
    context = root / "contexts" / name
    context.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}"] + ([f"parent: {parent}"] if parent else [])
    lines += ["test:", f'  command: ["cat", "/{name}.txt"]', f'  expect: "{name}"']
    (context / "image.yaml").write_text("\n".join(lines) + "\n")
    (context / f"{name}.txt").write_text(f"{name}\n")
    base = f"{namespace}/{parent}:latest" if parent else BASE
    (context / "Dockerfile").write_text(
        f"FROM {base}\nCOPY {name}.txt /{name}.txt\nRUN sleep 1 && cat /{name}.txt\n"
    )


class Project:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def lowbuild(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_lowbuild(self.root, self.env, *args)

    def latest_run(self) -> Path:
        return (self.root / ".lowbuild" / "logs" / "latest").resolve()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    podman = shutil.which("podman")
    if podman is None:
        pytest.fail("podman is not installed: run `make provision`")
    namespace = f"lowbuild-report-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "project"
    root.mkdir()
    (root / "lowbuild.yaml").write_text(
        f'name: reporttest\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n'
    )
    for name, parent in FAMILY.items():
        _write_image(root, namespace, name, parent)
    env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    yield Project(root, env)
    remove_namespace_images(podman, namespace)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver, both from Debian's packages (never a
    browser Selenium would download), logging the console and the network."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed: run `make provision-test`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1100,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, page: Path, shots: Path) -> dict[str, Any]:
    """Load `page` from disk; return what a person and the network saw. Leaves a
    full-page screenshot and a PDF print beside `shots` (its stem), paths printed."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get_log("performance")
    browser.get(page.as_uri())
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    whole = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": whole}
    )
    png = shots.with_suffix(".png")
    png.write_bytes(base64.b64decode(shot["data"]))
    pdf = shots.with_suffix(".pdf")
    pdf.write_bytes(base64.b64decode(browser.print_page()))
    print(f"screenshot of {page.name}: {png} (print: {pdf})")
    requests = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.add(message["params"]["request"]["url"])

    def count(selector: str) -> int:
        return int(browser.execute_script(f"return document.querySelectorAll({selector!r}).length"))

    return {
        "console": [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")],
        "requests": requests,
        "count": count,
        "title": browser.title,
        "png": png.read_bytes(),
        "pdf": pdf.read_bytes(),
    }


def _spans(run: Path) -> list[dict[str, Any]]:
    document = json.loads((run / "trace.json").read_text())
    return [e for e in document["traceEvents"] if e["ph"] == "X"]


def test_a_run_leaves_a_trace_and_its_report_opens_cleanly_in_chromium(
    project: Project, browser: Any, tmp_path: Path
) -> None:
    built = project.lowbuild("build", "--engine", "podman", "--test", "-j", "2")
    assert built.returncode == 0, built.stderr
    run = project.latest_run()

    # The trace: every span has a start and a duration; one image span per image
    # built; a parent's span ends before its children's start.
    spans = _spans(run)
    assert spans and all(isinstance(s["ts"], int) and s["dur"] >= 0 for s in spans)
    images = {s["args"]["image"]: s for s in spans if s["cat"] == "image"}
    assert sorted(images) == sorted(FAMILY)
    assert all(s["args"]["state"] == "built" for s in images.values())
    for child, parent in FAMILY.items():
        if parent:
            assert images[parent]["ts"] + images[parent]["dur"] <= images[child]["ts"]
    tests = [s for s in spans if s["cat"] == "test"]
    assert sorted(s["args"]["image"] for s in tests) == sorted(FAMILY)
    assert {s["name"] for s in spans if s["cat"] == "run"} >= {"plan", "build"}
    builds = [s for s in spans if s["cat"] == "phase" and s["name"] == "engine build"]
    assert len(builds) == len(FAMILY)
    # two jobs: b and d (both children of a) ran at once, on two build tracks
    assert images["b"]["tid"] != images["d"]["tid"]

    report = project.lowbuild("report")
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.strip())
    assert page == run / "report.html"
    assert page.stat().st_size < 300_000
    seen = _open(browser, page, tmp_path / "report")
    assert seen["console"] == []
    assert seen["requests"] == {page.as_uri()}
    count = seen["count"]
    assert count("svg.graph g.node") == len(FAMILY) + 1  # and the busybox base
    assert count("svg.graph g.node[data-state='built']") == len(FAMILY)
    assert count("svg.timeline rect.bar[data-state='built']") == len(FAMILY)
    assert count("svg.timeline rect.bar.critical") == 3  # a → b → c
    assert count("table.tests tr[data-test]") == len(FAMILY)
    assert seen["pdf"].startswith(b"%PDF-")
    assert seen["png"].startswith(b"\x89PNG") and len(seen["png"]) > 10_000

    data = conforming("report", project.lowbuild("report", "--json").stdout)
    assert data["critical_path"] == ["a", "b", "c"]
    for image in data["images"]:
        assert image["size"] and image["size"] > 0, image
        assert image["adds"] is not None and image["adds"] > 0, image  # a file and a layer
        assert image["test"]["passed"] is True


def test_the_report_colours_failed_blocked_and_up_to_date_images(
    project: Project, browser: Any, tmp_path: Path
) -> None:
    first = project.lowbuild("build", "--engine", "podman", "-j", "2")
    assert first.returncode == 0, first.stderr
    first_run = project.latest_run()
    dockerfile = project.root / "contexts" / "b" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN false\n")
    broken = project.lowbuild("build", "--engine", "podman", "-j", "2")
    assert broken.returncode != 0
    run = project.latest_run()
    assert run != first_run

    spans = _spans(run)
    states = {s["args"]["image"]: s["args"]["state"] for s in spans if s["cat"] == "image"}
    assert states == {"a": "up-to-date", "b": "failed", "d": "up-to-date"}  # c never started
    assert "error" in next(s for s in spans if s["cat"] == "image" and s["name"] == "b")["args"]

    report = project.lowbuild("report", "-o", str(tmp_path / "broken.html"))
    assert report.returncode == 0, report.stderr
    seen = _open(browser, tmp_path / "broken.html", tmp_path / "broken")
    assert seen["console"] == [] and len(seen["requests"]) == 1
    count = seen["count"]
    expected = {"up-to-date": 2, "failed": 1, "blocked": 1, "built": 0}
    for state, number in expected.items():
        assert count(f"svg.graph g.node[data-state='{state}']") == number, state
    assert count("svg.timeline rect.bar[data-state='built']") == 0

    # An earlier run, by name: its own states, untouched by the later one.
    older = conforming("report", project.lowbuild("report", first_run.name, "--json").stdout)
    assert {i["name"]: i["state"] for i in older["images"]} == dict.fromkeys(FAMILY, "built")


def test_a_test_run_is_traced_and_the_graph_page_opens_cleanly(
    project: Project, browser: Any, tmp_path: Path
) -> None:
    built = project.lowbuild("build", "--engine", "podman", "-j", "2")
    assert built.returncode == 0, built.stderr
    tested = project.lowbuild("test", "--engine", "podman")
    assert tested.returncode == 0, tested.stderr
    spans = _spans(project.latest_run())
    assert sorted(s["args"]["image"] for s in spans if s["cat"] == "test") == sorted(FAMILY)
    data = conforming("report", project.lowbuild("report", "--json").stdout)
    assert data["command"] == "test"
    assert all(i["test"]["passed"] for i in data["images"])
    assert all(i["size"] for i in data["images"])  # a test run's images, by their refs

    # --open hands the page to the user's browser ($BROWSER, as Python's webbrowser reads it)
    opened = tmp_path / "opened.txt"
    browser_script = tmp_path / "browser.sh"
    browser_script.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser_script.chmod(0o755)
    project.env["BROWSER"] = str(browser_script)
    shown = project.lowbuild("report", "--open")
    assert shown.returncode == 0, shown.stderr
    assert opened.read_text().strip() == Path(shown.stdout.strip()).as_uri()

    graph = project.lowbuild("graph", "--format", "html")
    assert graph.returncode == 0, graph.stderr
    page = tmp_path / "graph.html"
    page.write_text(graph.stdout)
    seen = _open(browser, page, tmp_path / "graph")
    assert seen["console"] == [] and seen["requests"] == {page.as_uri()}
    assert seen["count"]("svg.graph g.node") == len(FAMILY) + 1
    assert seen["count"]("svg.graph path.edge") == len(FAMILY)
