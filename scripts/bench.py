#!/usr/bin/env python3
"""Benchmarks of lowbuild against the ways people build image families without it.

Sections (each runs alone with --only; issue 7):
  noop   no-op rebuild of the seed family: lowbuild vs one `podman build` per image in
         dependency order (the tutorial's way) vs `docker buildx bake` (in waves), and
         vs the floor: one `podman image inspect` of every ref (issue 19);
  leaf   the Tomcat web app changed: the same three, plus `podman build` of Tomcat alone,
         lowbuild on buildx against bake on the same daemon, and how many images each
         one rebuilt;
  cold   cold build: lowbuild (parallel jobs) vs sequential `podman build`s, and vs the
         physical floor: the longest chain built alone, the busy core-seconds (from
         /proc/stat) over the cores;
  pack   a generated ~200 MB / 20,000-file tree into a deterministic .tar.gz vs GNU tar|gzip;
  fetch  8 x 64 MB from a loopback server (per-connection rate limit) vs sequential curl;
         lowbuild's peak RSS; a warm-cache fetch of the seed family;
  plan   `lowbuild plan` of generated families of 500 and 2,000 images, and a no-op
         build of a generated 200-image family.
  registry  a fresh runner (empty storage) with a warm registry cache vs the cold build,
         and a re-push of the unchanged family (blobs uploaded, counted from the
         registry's log) vs `podman push` of each tag in turn (issue 13).
  hosts  several build hosts (issue 16): a busybox fan-out and the seed family on one vs
         two `podman system service` endpoints started here (the same cores: no gain
         expected, the handover's cost is the figure), and a simulation of a generated
         500-image family over 1-16 endpoints, with lowbuild's own placement, against
         the critical path.
  multiarch  a three-image busybox family built cold for amd64, for arm64 under qemu, and
         for both in one run, then pushed with its manifest lists (issue 17).

Nothing here touches the images of the project or of other users: the seed family is
copied to --work under its own namespaces, and every podman command runs on a storage
of its own there (CONTAINERS_STORAGE_CONF). Only engine commands are timed; staging of
the baselines' contexts (with `lowbuild export bake`) is not. Results: --out/bench.json
and --out/bench.md; the Markdown is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.generate import TreeShape, copy_seed_family, write_family, write_tree
from benchmarks.hosts import (
    DEFAULT_BUILD_TIMES,
    DEFAULT_HANDOVER_S,
    ENDPOINT_COUNTS,
    generated_family,
    logged_seconds,
    scaling,
    width,
)
from benchmarks.stats import Figure, Goal, Results, figure_of, markdown_table, ratio

REPO = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)
LOWBUILD = [str(PYTHON), "-m", "lowbuild"]
SECTIONS = ("noop", "leaf", "cold", "pack", "fetch", "plan", "registry", "hosts", "multiarch")
BENCH_NS = "lowbuildbench"  # lowbuild's copy of the seed family
TUTORIAL_NS = "lowbuildtut"  # the baselines' copy (podman scripts and bake)
BOOKWORM = "localhost/lowbuild/bookworm:latest"
BUSYBOX = "localhost/lowbuild/busybox:latest"
TOMCAT_APP_FILE = Path("contexts/tomcat/app/static.html")


@dataclass(frozen=True)
class Timed:
    seconds: float
    max_rss_mb: float
    output: str


class BenchFailed(RuntimeError):
    """A timed or preparatory command failed: the figures would be meaningless."""


def run_timed(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Timed:
    """Run `argv`; return its wall time and output (no RSS: see run_with_rss).
    Raise BenchFailed when it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        text = output.decode(errors="replace")
        raise BenchFailed(f"{' '.join(argv)} exited {process.returncode}:\n{text[-4000:]}")
    return Timed(seconds=seconds, max_rss_mb=0.0, output=output.decode(errors="replace"))


# The peak RSS of a process forked from this (large) one would count our own pages:
# Python spawns with vfork, and ru_maxrss keeps the pre-exec high-water mark. So a
# small Python forks the measured command and reports its child's ru_maxrss.
_RSS_PROBE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"maxrss-kb={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_rss(argv: Sequence[str], *, env: dict[str, str] | None = None) -> Timed:
    """Like run_timed, with the command's own peak RSS (its ru_maxrss, from wait4)."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(PYTHON), "-c", _RSS_PROBE, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - started
    errors = done.stderr.decode(errors="replace")
    if done.returncode != 0:
        raise BenchFailed(f"{' '.join(argv)} exited {done.returncode}:\n{errors[-4000:]}")
    found = re.findall(r"^maxrss-kb=(\d+)$", errors, flags=re.MULTILINE)
    return Timed(seconds=seconds, max_rss_mb=int(found[-1]) / 1024, output=errors)


def _endpoint_services() -> Any:
    """The test suite's podman services (tests/integration/endpoint_services.py): each on
    its own storage, network and socket, stopped by PID and removed whatever happens."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    return importlib.import_module("endpoint_services")


def write_fan_out(root: Path, *, base: str) -> None:
    """A busybox-sized parent and four children: the handover benchmark's family."""
    root.mkdir(parents=True)
    (root / "lowbuild.yaml").write_text("name: fan\nnamespace: lowbuildhosts\n")
    for name in ("parent", "c1", "c2", "c3", "c4"):
        context = root / "contexts" / name
        context.mkdir(parents=True)
        source = base if name == "parent" else "lowbuildhosts/parent:latest"
        (context / "Dockerfile").write_text(f"FROM {source}\nRUN echo {name} > /{name}\n")
        parent = "" if name == "parent" else "parent: parent\n"
        (context / "image.yaml").write_text(f"name: {name}\n{parent}")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the workspace: project copies and a podman storage of the bench's own ----


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def lowbuild_project(self) -> Path:
        return self.root / "lowbuild-copy"

    @property
    def tutorial_project(self) -> Path:
        return self.root / "tutorial-copy"

    @property
    def bake_file(self) -> Path:
        return self.tutorial_project / "docker-bake.json"

    def storage_env(self, name: str = "storage") -> dict[str, str]:
        """The environment for podman (and lowbuild driving podman) on the bench storage."""
        conf = self.root / f"{name}.conf"
        if not conf.exists():
            conf.write_text(
                "[storage]\n"
                'driver = "overlay"\n'
                f'graphroot = "{self.root / name / "graph"}"\n'
                f'runroot = "{self.root / name / "run"}"\n'
            )
        return {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf), "LOWBUILD_ENGINE": "podman"}


def ensure_base_images(env: dict[str, str], refs: Sequence[str]) -> None:
    """Copy the provisioned base images from the host's podman storage into the bench's."""
    for ref in refs:
        if subprocess.run(["podman", "image", "exists", ref], env=env, check=False).returncode == 0:
            continue
        say(f"loading {ref} into the bench storage")
        save = subprocess.Popen(
            ["podman", "save", "--format", "docker-archive", ref], stdout=subprocess.PIPE
        )
        subprocess.run(
            ["podman", "load", "--quiet"],
            stdin=save.stdout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if save.wait() != 0:
            raise BenchFailed(f"podman save {ref} failed: run `make provision` first")


MULTIARCH_ARM_BASE = f"{BUSYBOX}-linux-arm64"  # scripts/provision.sh makes it
MULTIARCH_RUNS = {
    "amd64": ("linux/amd64",),
    "arm64 (qemu)": ("linux/arm64",),
    "amd64 + arm64": ("linux/amd64", "linux/arm64"),
}
# A RUN step that computes (100,000 shell additions), so that what emulation costs shows.
MULTIARCH_WORK = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"


def write_multiarch_family(root: Path, platforms: Sequence[str], *, stamp: str) -> None:
    """base (busybox) → left, right; each copies `stamp` and runs MULTIARCH_WORK."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "contexts").mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f"name: multiarch\nnamespace: lbmultiarch\nplatforms: [{', '.join(platforms)}]\n"
    )
    for name, parent in (("base", None), ("left", "base"), ("right", "base")):
        context = root / "contexts" / name
        context.mkdir()
        (context / "stamp").write_text(stamp + "\n")
        (context / "image.yaml").write_text(
            f"name: {name}\n" + (f"parent: {parent}\n" if parent else "")
        )
        source = f"lbmultiarch/{parent}:latest" if parent else BUSYBOX
        (context / "Dockerfile").write_text(
            f"FROM {source}\nCOPY stamp /{name}.stamp\nRUN {MULTIARCH_WORK}\n"
        )


def lowbuild_build(
    ws: Workspace,
    *,
    env: dict[str, str],
    names: Sequence[str] = (),
    jobs: int = 2,
    extra: Sequence[str] = (),
    engine: str = "podman",
) -> Timed:
    project = ws.lowbuild_project / "lowbuild.yaml"
    return run_timed(
        [
            *LOWBUILD,
            "build",
            "-f",
            str(project),
            "-e",
            engine,
            "--jobs",
            str(jobs),
            "--json",
            *extra,
            *names,
        ],
        env=env,
    )


@contextmanager
def local_registry(root: Path) -> Iterator[tuple[str, Path]]:
    """`docker-registry serve` on a free loopback port, plain http, logging every request;
    (host, log file). Stopped by its PID and its storage removed, whatever happens."""
    import socket

    binary = shutil.which("docker-registry")
    if binary is None:
        raise BenchFailed("docker-registry is not installed: run `make provision`")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{sock.getsockname()[1]}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config, log = root / "config.yml", root / "registry.log"
    config.write_text(
        f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\nhttp:\n  addr: {host}\n"
    )
    with log.open("ab") as out:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(
            ["curl", "-fsS", "-o", "/dev/null", f"http://{host}/v2/"], capture_output=True
        ).returncode:
            if time.monotonic() > deadline:
                raise BenchFailed(f"the registry did not start: {log.read_text()[-500:]}")
            time.sleep(0.1)
        yield host, log
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _uploads(log: Path) -> int:
    """Blob uploads the registry has finished so far (its access log's PUT …/blobs/uploads)."""
    return sum(
        1 for line in log.read_text(errors="replace").splitlines()
        if '"PUT /v2/' in line and "/blobs/uploads/" in line
    )  # fmt: skip


def built_names(output: str) -> list[str]:
    """Images a `lowbuild build --json` run reports as built (the JSON is the last thing it
    prints)."""
    start = output.find("[\n")
    records = json.loads(output[start:]) if start >= 0 else []
    return [r["image"] for r in records if r.get("state") == "built"]


@dataclass(frozen=True)
class BakePlan:
    """What `lowbuild export bake` wrote, read back: the waves and each target's build."""

    waves: tuple[tuple[str, ...], ...]
    targets: dict[str, dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [name for wave in self.waves for name in wave]

    def refs(self) -> list[str]:
        return [str(self.targets[name]["tags"][0]) for name in self.names]


def stage_tutorial(ws: Workspace) -> BakePlan:
    """Stage the baselines' contexts and write the bake file (not timed)."""
    run_timed(
        [
            *LOWBUILD,
            "export",
            "bake",
            "-f",
            str(ws.tutorial_project / "lowbuild.yaml"),
            "-o",
            str(ws.bake_file),
            "--stage",
            str(ws.tutorial_project / "stage"),
        ]
    )
    document = json.loads(ws.bake_file.read_text())
    groups = document["group"]
    waves = tuple(tuple(groups[f"wave-{i}"]["targets"]) for i in range(len(groups) - 1))
    return BakePlan(waves=waves, targets=document["target"])


def tutorial_commands(bake: BakePlan, *, only: Sequence[str] = ()) -> list[list[str]]:
    """The tutorial's way: one plain `podman build` per image, in dependency order
    (the bake file's waves), relying on podman's layer cache."""
    commands = []
    for name in bake.names:
        if only and name not in only:
            continue
        target = bake.targets[name]
        argv = ["podman", "build", "--quiet"]
        for tag in target["tags"]:
            argv += ["-t", str(tag)]
        for key, value in sorted(target.get("args", {}).items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["-f", str(target["dockerfile"]), str(target["context"])]
        commands.append(argv)
    return commands


def run_sequence(commands: Sequence[Sequence[str]], *, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    for argv in commands:
        run_timed(argv, env=env)
    return time.perf_counter() - started


def bake_commands(ws: Workspace, bake: BakePlan) -> list[list[str]]:
    return [
        [
            "docker",
            "buildx",
            "bake",
            "--progress",
            "plain",
            "-f",
            str(ws.bake_file),
            f"wave-{index}",
        ]
        for index in range(len(bake.waves))
    ]


def image_ids(
    refs: Sequence[str], *, engine: str, env: dict[str, str] | None = None
) -> dict[str, str]:
    ids = {}
    for ref in refs:
        done = subprocess.run(
            [engine, "image", "inspect", "--format", "{{.Id}}", ref],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        ids[ref] = done.stdout.strip() if done.returncode == 0 else ""
    return ids


def lowbuild_refs(ws: Workspace) -> list[str]:
    names = sorted(p.parent.name for p in (ws.lowbuild_project / "contexts").glob("*/image.yaml"))
    return [f"{BENCH_NS}/{name}:latest" for name in names]


def touch_app(project: Path, run: str) -> None:
    with (project / TOMCAT_APP_FILE).open("a") as f:
        f.write(f"<!-- bench change {run} {time.time_ns()} -->\n")


def busy_core_seconds() -> float:
    """CPU time all cores spent not idle since boot (the `cpu` line of /proc/stat: user,
    nice, system, idle, iowait, irq, softirq, steal; guest time is inside user)."""
    ticks = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def longest_chain(record: dict[str, Any]) -> tuple[list[str], float]:
    """The chain of images (parent first) whose build times, as a run recorded them
    (run.json), add up to the most."""
    images = {i["name"]: i for i in record["images"] if i.get("started") and i.get("ended")}
    best: dict[str, tuple[list[str], float]] = {}

    def chain(name: str) -> tuple[list[str], float]:
        if name not in best:
            item = images[name]
            own = float(item["ended"]) - float(item["started"])
            parents = [chain(p) for p in item["parents"] if p in images]
            above = max(parents, key=lambda c: c[1], default=([], 0.0))
            best[name] = ([*above[0], name], above[1] + own)
        return best[name]

    return max((chain(name) for name in images), key=lambda c: c[1])


def changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for ref in after if after[ref] != before.get(ref))


# ---- sections ----


@dataclass
class Bench:
    ws: Workspace
    runs: int
    quick: bool
    results: Results
    jobs: int
    fetch_rate: float
    prepared: bool = False

    def prepare_family(self) -> BakePlan:
        """Both copies of the seed family, built once (not timed) so the runs that follow
        measure rebuilds; returns the bake file."""
        env = self.ws.storage_env()
        if not self.prepared:
            copy_seed_family(REPO, self.ws.lowbuild_project, namespace=BENCH_NS)
            copy_seed_family(REPO, self.ws.tutorial_project, namespace=TUTORIAL_NS)
            ensure_base_images(env, [BOOKWORM, BUSYBOX])
            self.prepared = True
        bake = stage_tutorial(self.ws)
        say("preparing: lowbuild build of the bench copy (cold the first time)")
        lowbuild_build(self.ws, env=env, jobs=self.jobs)
        say("preparing: the tutorial's podman builds")
        run_sequence(tutorial_commands(bake), env=env)
        say("preparing: docker buildx bake")
        run_sequence(bake_commands(self.ws, bake))
        return bake

    def noop(self) -> None:
        section = "1 no-op rebuild"
        bake = self.prepare_family()
        env = self.ws.storage_env()
        lb: list[float] = []
        tut: list[float] = []
        bk: list[float] = []
        floor: list[float] = []
        # The floor: the one engine query a no-op cannot do without, the IDs and labels of
        # every image of the family and of its base, in one `podman image inspect`.
        inspect_all = ["podman", "image", "inspect", *lowbuild_refs(self.ws), BOOKWORM]
        for run in range(self.runs):
            timed = lowbuild_build(self.ws, env=env, jobs=self.jobs)
            if built_names(timed.output):
                raise BenchFailed(f"no-op run rebuilt {built_names(timed.output)}")
            lb.append(timed.seconds)
            floor.append(run_timed(inspect_all, env=env).seconds)
            tut.append(run_sequence(tutorial_commands(bake), env=env))
            bk.append(run_sequence(bake_commands(self.ws, bake)))
            say(
                f"noop run {run + 1}: lowbuild {lb[-1]:.2f}s floor {floor[-1]:.2f}s "
                f"podman {tut[-1]:.2f}s bake {bk[-1]:.2f}s"
            )
        f_lb = self.results.add(figure_of(section, "lowbuild build (7 images)", lb))
        f_floor = self.results.add(
            figure_of(section, "floor: one podman image inspect of the 7 refs and the base", floor)
        )
        f_tut = self.results.add(figure_of(section, "podman build x6, in order", tut))
        f_bk = self.results.add(figure_of(section, "docker buildx bake, 3 waves (6 targets)", bk))
        r_tut, r_bk = ratio(f_tut, f_lb), ratio(f_bk, f_lb)
        self.results.add(figure_of(section, "speed-up vs podman builds", [r_tut], "x"))
        self.results.add(figure_of(section, "speed-up vs bake", [r_bk], "x"))
        r_floor = ratio(f_lb, f_floor)
        self.results.add(figure_of(section, "lowbuild / floor", [r_floor], "x"))
        self.results.goals.append(
            Goal(
                section,
                "at most 1.5x the floor (one engine query)",
                f"{f_lb.median:.3f} s vs {f_floor.median:.3f} s: {r_floor:.2f}x",
                r_floor <= 1.5,
            )
        )
        self.results.goals.append(
            Goal(section, "at least 2x faster than bake", f"{r_bk:.2f}x", r_bk >= 2)
        )
        self.results.goals.append(
            Goal(
                section,
                "at least 10x faster than the podman builds",
                f"{r_tut:.1f}x",
                r_tut >= 10,
            )
        )

    def leaf(self) -> None:
        section = "2 one leaf changed"
        bake = self.prepare_family()
        env = self.ws.storage_env()
        lb_refs = lowbuild_refs(self.ws)
        tut_refs = bake.refs()
        tomcat_only = tutorial_commands(bake, only=("tomcat",))
        say("preparing: lowbuild build of the bench copy on buildx (cold the first time)")
        lowbuild_build(self.ws, env=env, jobs=self.jobs, engine="buildx")
        lb, tut, alone, bk, lbx = [], [], [], [], []
        bare: list[float] = []  # --no-sbom: what the SBOM step costs
        bare_x: list[float] = []
        n_lb, n_tut, n_bk = [], [], []
        for run in range(self.runs):
            touch_app(self.ws.lowbuild_project, f"lb{run}")
            before = image_ids(lb_refs, engine="podman", env=env)
            timed = lowbuild_build(self.ws, env=env, jobs=self.jobs)
            lb.append(timed.seconds)
            n_lb.append(changed(before, image_ids(lb_refs, engine="podman", env=env)))
            if built_names(timed.output) != ["tomcat"]:
                self.results.notes.append(
                    f"leaf run {run + 1}: lowbuild built {built_names(timed.output)}"
                )
            # The same change, built by lowbuild on buildx (the daemon bake uses).
            timed = lowbuild_build(self.ws, env=env, jobs=self.jobs, engine="buildx")
            lbx.append(timed.seconds)
            if built_names(timed.output) != ["tomcat"]:
                self.results.notes.append(
                    f"leaf run {run + 1}: lowbuild on buildx built {built_names(timed.output)}"
                )
            # Another change, built without SBOM on both engines.
            touch_app(self.ws.lowbuild_project, f"bare{run}")
            for engine, samples in (("podman", bare), ("buildx", bare_x)):
                timed = lowbuild_build(
                    self.ws, env=env, jobs=self.jobs, engine=engine, extra=["--no-sbom"]
                )
                samples.append(timed.seconds)
                if built_names(timed.output) != ["tomcat"]:
                    raise BenchFailed(f"--no-sbom on {engine} built {built_names(timed.output)}")

            touch_app(self.ws.tutorial_project, f"tut{run}")
            stage_tutorial(self.ws)
            before = image_ids(tut_refs, engine="podman", env=env)
            tut.append(run_sequence(tutorial_commands(bake), env=env))
            n_tut.append(changed(before, image_ids(tut_refs, engine="podman", env=env)))

            touch_app(self.ws.tutorial_project, f"alone{run}")
            stage_tutorial(self.ws)
            alone.append(run_sequence(tomcat_only, env=env))

            touch_app(self.ws.tutorial_project, f"bake{run}")
            stage_tutorial(self.ws)
            before = image_ids(tut_refs, engine="docker")
            bk.append(run_sequence(bake_commands(self.ws, bake)))
            n_bk.append(changed(before, image_ids(tut_refs, engine="docker")))
            say(
                f"leaf run {run + 1}: lowbuild {lb[-1]:.2f}s ({n_lb[-1]} rebuilt) "
                f"lowbuild on buildx {lbx[-1]:.2f}s (--no-sbom: {bare[-1]:.2f}s, buildx "
                f"{bare_x[-1]:.2f}s) podman {tut[-1]:.2f}s "
                f"({n_tut[-1]}) tomcat alone {alone[-1]:.2f}s bake {bk[-1]:.2f}s ({n_bk[-1]})"
            )
        f_lb = self.results.add(figure_of(section, "lowbuild build", lb))
        f_tut = self.results.add(figure_of(section, "podman build x6, in order", tut))
        f_alone = self.results.add(
            figure_of(section, "podman build of tomcat alone (engine's own time)", alone)
        )
        f_bk = self.results.add(figure_of(section, "docker buildx bake, 3 waves", bk))
        f_lbx = self.results.add(figure_of(section, "lowbuild build --engine buildx", lbx))
        self.results.add(figure_of(section, "lowbuild build --no-sbom (podman)", bare))
        self.results.add(figure_of(section, "lowbuild build --no-sbom --engine buildx", bare_x))
        self.results.add(figure_of(section, "images rebuilt by lowbuild", n_lb, "count"))
        self.results.add(
            figure_of(section, "images rebuilt by podman builds (new image ID)", n_tut, "count")
        )
        self.results.add(figure_of(section, "images rebuilt by bake (new image ID)", n_bk, "count"))
        r_alone = ratio(f_lb, f_alone)
        self.results.add(figure_of(section, "lowbuild / engine alone", [r_alone], "x"))
        self.results.add(figure_of(section, "podman builds / lowbuild", [ratio(f_tut, f_lb)], "x"))
        self.results.add(figure_of(section, "bake / lowbuild", [ratio(f_bk, f_lb)], "x"))
        self.results.goals.append(
            Goal(
                section,
                "podman: only that image rebuilt; at most 1.2x `podman build` of it",
                f"{max(n_lb)} image(s) rebuilt per run; {r_alone:.2f}x",
                max(n_lb) == 1 and r_alone <= 1.2,
            )
        )
        r_bake = ratio(f_lbx, f_bk)
        self.results.add(figure_of(section, "lowbuild on buildx / bake", [r_bake], "x"))
        self.results.goals.append(
            Goal(
                section,
                "buildx: at most 1.0x `docker buildx bake` of the same change",
                f"{f_lbx.median:.2f} s vs {f_bk.median:.2f} s: {r_bake:.2f}x",
                r_bake <= 1.0,
            )
        )

    def cold(self) -> None:
        section = "3 cold build"
        if not self.prepared:
            copy_seed_family(REPO, self.ws.lowbuild_project, namespace=BENCH_NS)
            copy_seed_family(REPO, self.ws.tutorial_project, namespace=TUTORIAL_NS)
            self.prepared = True
        bake = stage_tutorial(self.ws)
        names = bake.names
        runs = max(1, min(self.runs, 2))
        lb, seq, busy = [], [], []
        cores = os.cpu_count() or 1
        for run in range(runs):
            env = self.fresh_storage("cold")
            before = busy_core_seconds()
            timed = lowbuild_build(self.ws, env=env, names=names, jobs=self.jobs)
            busy.append(busy_core_seconds() - before)
            lb.append(timed.seconds)
            env = self.fresh_storage("cold")
            seq.append(run_sequence(tutorial_commands(bake), env=env))
            say(
                f"cold run {run + 1}: lowbuild -j{self.jobs} {lb[-1]:.1f}s "
                f"({busy[-1]:.0f} busy core-seconds) sequential {seq[-1]:.1f}s"
            )
        # The physical floor, part 1: the longest chain of the last run (by its recorded
        # build times), built alone on an empty storage, nothing beside it.
        record = json.loads(
            (self.ws.lowbuild_project / ".lowbuild/logs/latest/run.json").read_text()
        )
        chain, _ = longest_chain(record)
        env = self.fresh_storage("cold")
        alone = lowbuild_build(self.ws, env=env, names=[chain[-1]], jobs=self.jobs).seconds
        say(f"cold: the longest chain {' → '.join(chain)} alone {alone:.1f}s")
        self.fresh_storage("cold", keep=False)
        f_lb = self.results.add(
            figure_of(section, f"lowbuild build --jobs {self.jobs} (6 images)", lb)
        )
        f_seq = self.results.add(figure_of(section, "podman build x6, sequential", seq))
        r = ratio(f_lb, f_seq)
        self.results.add(figure_of(section, "lowbuild / sequential", [r], "x"))
        f_busy = self.results.add(
            figure_of(
                section,
                f"busy core-seconds of that build / {cores} cores",
                [b / cores for b in busy],
                note="from /proc/stat",
            )
        )
        f_chain = self.results.add(
            figure_of(section, f"longest chain alone ({' → '.join(chain)})", [alone])
        )
        floor = max(f_busy.median, f_chain.median)
        r_floor = f_lb.median / floor
        self.results.add(
            figure_of(section, "lowbuild / floor (the larger of the two)", [r_floor], "x")
        )
        self.results.goals.append(
            Goal(
                section,
                "within 1.15x of the floor: max(longest chain alone, busy core-s / cores)",
                f"{f_lb.median:.1f} s vs {floor:.1f} s: {r_floor:.2f}x",
                r_floor <= 1.15,
            )
        )
        self.results.goals.append(
            Goal(section, "at most 0.75x the sequential scripts", f"{r:.2f}x", r <= 0.75)
        )

    def registry(self) -> None:
        section = "8 registry"
        if not self.prepared:
            copy_seed_family(REPO, self.ws.lowbuild_project, namespace=BENCH_NS)
            copy_seed_family(REPO, self.ws.tutorial_project, namespace=TUTORIAL_NS)
            self.prepared = True
        # Not ws.root / "registry": fresh_storage("registry") wipes that for podman.
        with local_registry(self.ws.root / "oci-registry") as (host, log):
            cache, publish = f"{host}/cache", f"{host}/published"
            tls = "--no-tls-verify"
            env = self.fresh_storage("registry")
            cold = lowbuild_build(
                self.ws, env=env, jobs=self.jobs, extra=("--test", "--cache-to", cache, tls)
            )
            say(f"cold build --test --cache-to: {cold.seconds:.1f}s")
            fresh, pulled_only = [], []
            for run in range(max(1, min(self.runs, 3))):
                env = self.fresh_storage("registry")  # a fresh runner: nothing built here
                timed = lowbuild_build(
                    self.ws, env=env, jobs=self.jobs, extra=("--test", "--cache-from", cache, tls)
                )
                fresh.append(timed.seconds)
                pulled_only.append(float(len(built_names(timed.output))))
                say(
                    f"fresh runner run {run + 1}: {timed.seconds:.1f}s, built {pulled_only[-1]:.0f}"
                )
            f_cold = self.results.add(
                figure_of(section, "cold build --test (cache-to)", [cold.seconds])
            )
            f_fresh = self.results.add(
                figure_of(section, "fresh runner, warm cache: build --test --cache-from", fresh)
            )
            self.results.add(
                figure_of(section, "images built by the fresh runner", pulled_only, "count")
            )
            r = ratio(f_fresh, f_cold)
            self.results.add(figure_of(section, "fresh runner / cold build", [r], "x"))
            self.results.goals.append(
                Goal(
                    section,
                    "fresh runner at most 0.15x the cold build, 0 images built",
                    f"{r:.2f}x, {max(pulled_only):.0f} built",
                    r <= 0.15 and max(pulled_only) == 0,
                )
            )
            project = str(self.ws.lowbuild_project / "lowbuild.yaml")
            push = [*LOWBUILD, "push", "-f", project, "-e", "podman", "--to", publish, tls]
            run_timed(push, env=env)  # the first push uploads; the ones timed find it all there
            lb, blobs, tut = [], [], []
            refs = lowbuild_refs(self.ws)
            for run in range(max(1, min(self.runs, 3))):
                before = _uploads(log)
                lb.append(run_timed(push, env=env).seconds)
                blobs.append(float(_uploads(log) - before))
                started = time.perf_counter()
                for ref in refs:
                    destination = f"docker://{publish}/{ref.split('/', 1)[1]}"
                    subprocess.run(
                        ["podman", "push", "--quiet", "--tls-verify=false", ref, destination],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                tut.append(time.perf_counter() - started)
                say(
                    f"re-push run {run + 1}: lowbuild {lb[-1]:.2f}s ({blobs[-1]:.0f} blobs), "
                    f"podman {tut[-1]:.2f}s"
                )
            f_lb = self.results.add(figure_of(section, "lowbuild push, unchanged family", lb))
            self.results.add(figure_of(section, "blobs uploaded by that push", blobs, "count"))
            self.results.add(figure_of(section, "podman push of each image in turn", tut))
            self.results.goals.append(
                Goal(
                    section,
                    "re-push of the unchanged family under 1.5 s, 0 blobs uploaded",
                    f"{f_lb.median:.2f}s, {max(blobs):.0f} blobs",
                    f_lb.median < 1.5 and max(blobs) == 0,
                )
            )
        self.fresh_storage("registry", keep=False)

    def fresh_storage(self, name: str, *, keep: bool = True) -> dict[str, str]:
        """An empty podman storage (removing the previous one), with the base images."""
        env = self.ws.storage_env(name)
        if (self.ws.root / name).exists():
            # Not `podman system reset`: that also drops the host's podman networks.
            subprocess.run(
                ["podman", "rmi", "--all", "--force"], env=env, check=False, capture_output=True
            )
            shutil.rmtree(self.ws.root / name, ignore_errors=True)
        if keep:
            ensure_base_images(env, [BOOKWORM])
            # The stage from the previous run would make lowbuild's staging look free.
            shutil.rmtree(self.ws.lowbuild_project / ".lowbuild" / "stage", ignore_errors=True)
        return env

    def pack(self) -> None:
        section = "4 packing"
        shape = (
            TreeShape() if not self.quick else TreeShape(total_bytes=40 * 1024 * 1024, files=4_000)
        )
        tree = self.ws.root / "pack" / f"tree-{shape.total_bytes}-{shape.files}"
        marker = tree.with_suffix(".done")
        if not marker.exists():
            shutil.rmtree(tree, ignore_errors=True)
            say(f"writing the tree to pack: {shape.files} files, {shape.total_bytes >> 20} MB")
            marker.write_text(write_tree(tree, shape))
        out = self.ws.root / "pack"
        lb, gnu, digests = [], [], set()
        lb_size = gnu_size = 0
        code = (
            "import sys; from pathlib import Path; "
            "from lowbuild.context.pack import pack_deterministic; "
            "pack_deterministic(Path(sys.argv[1]), Path(sys.argv[2]), 'tar.gz')"
        )
        for run in range(self.runs):
            target = out / "lowbuild.tar.gz"
            lb.append(run_timed([str(PYTHON), "-c", code, str(tree), str(target)]).seconds)
            digests.add(hashlib.sha256(target.read_bytes()).hexdigest())
            lb_size = target.stat().st_size
            gnu_target = out / "gnu.tar.gz"
            shell = (
                f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C '{tree}' -c . "
                f"| gzip -n > '{gnu_target}'"
            )
            gnu.append(run_timed(["bash", "-o", "pipefail", "-c", shell]).seconds)
            gnu_size = gnu_target.stat().st_size
            say(f"pack run {run + 1}: lowbuild {lb[-1]:.2f}s tar|gzip {gnu[-1]:.2f}s")
        note = f"{shape.files} files, {shape.total_bytes / 1e6:.0f} MB"
        f_lb = self.results.add(figure_of(section, "lowbuild pack_deterministic", lb, note=note))
        f_gnu = self.results.add(figure_of(section, "GNU tar --sort=name | gzip -n", gnu))
        self.results.add(figure_of(section, "output size, lowbuild", [lb_size / 1e6], "MB"))
        self.results.add(figure_of(section, "output size, tar | gzip", [gnu_size / 1e6], "MB"))
        r = ratio(f_lb, f_gnu)
        self.results.add(figure_of(section, "lowbuild / tar|gzip", [r], "x"))
        self.results.goals.append(
            Goal(
                section,
                "within 1.3x of GNU tar + gzip, byte-identical across runs",
                f"{r:.2f}x; {len(digests)} distinct output(s) in {len(lb)} runs",
                r <= 1.3 and len(digests) == 1,
            )
        )

    def fetch(self) -> None:
        section = "5 fetching"
        count, size = 8, (64 << 20) if not self.quick else (16 << 20)
        served = self.ws.root / "fetch" / f"served-{size}"
        if not (served / "done").exists():
            shutil.rmtree(served, ignore_errors=True)
            served.mkdir(parents=True)
            import random

            for index in range(count):
                (served / f"blob-{index}.bin").write_bytes(random.Random(index).randbytes(size))
            (served / "done").write_text("")
        digests = [
            hashlib.sha256((served / f"blob-{i}.bin").read_bytes()).hexdigest()
            for i in range(count)
        ]
        server = subprocess.Popen(
            [
                str(PYTHON),
                str(REPO / "scripts" / "benchmarks" / "serve.py"),
                str(served),
                str(self.fetch_rate),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            project = self.ws.root / "fetch" / "project"
            shutil.rmtree(project, ignore_errors=True)
            context = project / "contexts" / "blobs"
            context.mkdir(parents=True)
            (project / "lowbuild.yaml").write_text(
                "name: fetchbench\nnamespace: lowbuildbench\ncontexts: ['contexts/*']\n"
            )
            artifacts = "".join(
                f"  - file: blob-{i}.bin\n    urls: [http://127.0.0.1:{port}/blob-{i}.bin]\n"
                f"    sha256: {digests[i]}\n"
                for i in range(count)
            )
            (context / "image.yaml").write_text(
                f"name: blobs\nkind: dockerfile\nartifacts:\n{artifacts}"
            )
            (context / "Dockerfile").write_text("FROM scratch\n")
            par, seq, rss = [], [], []
            for run in range(self.runs):
                cache = self.ws.root / "fetch" / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                timed = run_with_rss(
                    [
                        *LOWBUILD,
                        "fetch",
                        "-f",
                        str(project / "lowbuild.yaml"),
                        "--cache",
                        str(cache),
                        "--jobs",
                        str(count),
                    ]
                )
                par.append(timed.seconds)
                rss.append(timed.max_rss_mb)
                shutil.rmtree(cache, ignore_errors=True)
                downloads = self.ws.root / "fetch" / "curl"
                shutil.rmtree(downloads, ignore_errors=True)
                downloads.mkdir()
                seq.append(
                    run_sequence(
                        [
                            [
                                "curl",
                                "-sSf",
                                "-o",
                                str(downloads / f"blob-{i}.bin"),
                                f"http://127.0.0.1:{port}/blob-{i}.bin",
                            ]
                            for i in range(count)
                        ]
                    )
                )
                shutil.rmtree(downloads, ignore_errors=True)
                say(
                    f"fetch run {run + 1}: lowbuild {par[-1]:.2f}s ({rss[-1]:.0f} MB) "
                    f"curl x{count} {seq[-1]:.2f}s"
                )
        finally:
            server.kill()
            server.wait()
        note = f"{count} x {size >> 20} MB, {self.fetch_rate / 1e6:.0f} MB/s per connection"
        f_par = self.results.add(
            figure_of(section, f"lowbuild fetch --jobs {count}", par, note=note)
        )
        f_seq = self.results.add(figure_of(section, "curl, one file after another", seq))
        f_rss = self.results.add(figure_of(section, "lowbuild fetch peak RSS", rss, "MB"))
        # Warm cache: the whole seed family, everything already verified in the user's cache.
        copy_seed_family(REPO, self.ws.root / "fetch" / "seed", namespace=BENCH_NS)
        seed = str(self.ws.root / "fetch" / "seed" / "lowbuild.yaml")
        run_timed([*LOWBUILD, "fetch", "-f", seed])  # the cache is filled (or it fails here)
        warm = [run_timed([*LOWBUILD, "fetch", "-f", seed]).seconds for _ in range(self.runs)]
        f_warm = self.results.add(
            figure_of(section, "lowbuild fetch, warm cache, seed family", warm)
        )
        r = ratio(f_par, f_seq)
        self.results.add(figure_of(section, "parallel / sequential", [r], "x"))
        self.results.goals.append(
            Goal(
                section,
                "parallel at most 0.5x sequential; peak RSS under 100 MB; warm fetch under 0.3 s",
                f"{r:.2f}x; {f_rss.high:.0f} MB; {f_warm.median:.3f} s",
                r <= 0.5 and f_rss.high < 100 and f_warm.median < 0.3,
            )
        )

    def hosts(self) -> None:
        section = "9 several build hosts"
        handover_s, build_times = DEFAULT_HANDOVER_S, list(DEFAULT_BUILD_TIMES)
        measured = "defaults, not measured"
        try:
            handover_s = self.hosts_fan_out(section)
            measured = "measured handover"
            if not self.quick:
                build_times = self.hosts_seed(section) or build_times
                measured = "measured handover and seed build times"
        finally:
            self.hosts_simulation(section, handover_s, build_times, measured)

    def hosts_fan_out(self, section: str) -> float:
        """A busybox parent and four children on one endpoint vs two (one job each):
        the children split, and the parent is handed over once. Fresh endpoints each
        run. The median seconds of one handover (pull by digest, ID check, tags)."""
        family = self.ws.root / "hosts" / "fan"
        shutil.rmtree(family, ignore_errors=True)
        write_fan_out(family, base=BUSYBOX)
        one: list[float] = []
        two: list[float] = []
        handed: list[float] = []
        pushed: list[float] = []
        with local_registry(self.ws.root / "hosts-registry") as (host, _):
            for run in range(max(1, min(self.runs, 3))):
                for count, samples in ((1, one), (2, two)):
                    shutil.rmtree(family / ".lowbuild", ignore_errors=True)
                    with contextlib.ExitStack() as stack:
                        where = self.podman_endpoints(stack, count, f"{run}{count}", BUSYBOX)
                        timed = run_timed(
                            [
                                *LOWBUILD,
                                "build",
                                "-f",
                                str(family / "lowbuild.yaml"),
                                *where,
                                f"--cache-to={host}/fan",
                                "--no-tls-verify",
                                "--json",
                            ]
                        )
                    samples.append(timed.seconds)
                    if count == 2:
                        h, p = logged_seconds(family / ".lowbuild" / "logs" / "latest")
                        handed += h
                        pushed += p
                say(f"fan-out run {run + 1}: 1 endpoint {one[-1]:.1f}s, 2 endpoints {two[-1]:.1f}s")
        if not handed:
            raise BenchFailed("no handover happened in the two-endpoint runs")
        f_one = self.results.add(figure_of(section, "busybox fan-out (1+4), 1 endpoint", one))
        f_two = self.results.add(figure_of(section, "busybox fan-out (1+4), 2 endpoints", two))
        f_handed = self.results.add(
            figure_of(section, "one handover (pull by digest, check, tag)", handed)
        )
        self.results.add(figure_of(section, "one handover push (each image built)", pushed))
        self.results.add(figure_of(section, "2 endpoints / 1", [ratio(f_two, f_one)], "x"))
        self.results.goals.append(
            Goal(
                section,
                "registry handover under 1.5 s per parent→child edge (busybox-sized parent)",
                f"{f_handed.median:.2f} s (max {f_handed.high:.2f} s)",
                f_handed.median < 1.5,
            )
        )
        return f_handed.median

    def podman_endpoints(
        self, stack: contextlib.ExitStack, count: int, run: str, base: str
    ) -> list[str]:
        """`count` fresh podman services (stopped and removed when `stack` closes), each
        holding `base`: the `--endpoint` options naming them a, b, … with one job each."""
        services = _endpoint_services()
        where = []
        for name in "abcdefgh"[:count]:
            root = self.ws.root / "hosts" / f"{name}{run}"
            shutil.rmtree(root, ignore_errors=True)
            service = stack.enter_context(services.podman_service(root))
            services.load_image(service.client, base)
            where.append(f"--endpoint={name}=podman+{service.url},jobs=1")
        return where

    def hosts_seed(self, section: str) -> list[float]:
        """The seed family cold on one podman service vs two (one job each); the
        per-image build seconds of the one-endpoint run."""
        if not self.prepared:
            copy_seed_family(REPO, self.ws.lowbuild_project, namespace=BENCH_NS)
            copy_seed_family(REPO, self.ws.tutorial_project, namespace=TUTORIAL_NS)
            self.prepared = True
        project = self.ws.lowbuild_project / "lowbuild.yaml"
        seconds: dict[int, float] = {}
        durations: list[float] = []
        with local_registry(self.ws.root / "hosts-registry") as (host, _):
            for count in (1, 2):
                with contextlib.ExitStack() as stack:
                    where = self.podman_endpoints(stack, count, f"seed{count}", BOOKWORM)
                    argv = [
                        *LOWBUILD,
                        "build",
                        "-f",
                        str(project),
                        *where,
                        f"--cache-to={host}/seed",
                        "--no-tls-verify",
                        "--json",
                    ]
                    started = time.perf_counter()
                    # stdout alone: the JSON records (run_timed merges stderr in).
                    done = subprocess.run(argv, capture_output=True, text=True, check=False)
                    took = time.perf_counter() - started
                    if done.returncode != 0:
                        raise BenchFailed(f"seed over {count} endpoint(s): {done.stderr[-3000:]}")
                seconds[count] = took
                if count == 1:
                    durations = [
                        float(r["duration"]) for r in json.loads(done.stdout) if r["duration"]
                    ]
                say(f"seed family cold, {count} endpoint(s): {took:.1f}s")
        f_one = self.results.add(figure_of(section, "seed family cold, 1 endpoint", [seconds[1]]))
        f_two = self.results.add(figure_of(section, "seed family cold, 2 endpoints", [seconds[2]]))
        self.results.add(
            figure_of(section, "seed: 2 endpoints / 1 (same 2 cores)", [ratio(f_two, f_one)], "x")
        )
        return durations

    def hosts_simulation(
        self, section: str, handover_s: float, build_times: Sequence[float], source: str
    ) -> None:
        """A generated 500-image family over 1-16 endpoints (and its width), one job
        each, placed as lowbuild places: makespan against the critical path."""
        family = generated_family(500, build_times=build_times)
        wide = width(family)
        counts = sorted({*ENDPOINT_COUNTS, wide})
        rows = scaling(family, handover_s=handover_s, counts=counts)
        for row in rows:
            self.results.add(
                figure_of(
                    section,
                    f"simulated 500 images, {row.endpoints} endpoint(s): makespan",
                    [row.makespan],
                    note=f"critical path {row.critical_path:.0f} s ({row.ratio:.2f}x); lower "
                    f"bound {row.bound:.0f} s ({row.over_bound:.2f}x); {row.handovers} "
                    f"handovers ({source}, {handover_s:.2f} s each)",
                )
            )
        at_width = [row for row in rows if row.endpoints >= wide]
        worst = max(row.ratio for row in at_width)
        self.results.goals.append(
            Goal(
                section,
                f"simulated makespan within 1.2x of the critical path once N >= the "
                f"family's width ({wide})",
                f"{worst:.3f}x at N >= {wide} ({source})",
                worst <= 1.2,
            )
        )

    def multiarch(self) -> None:
        """A busybox family of three images (base → two children), each with a CPU-bound
        RUN step, built cold for linux/amd64 alone, for linux/arm64 alone (under qemu)
        and for both in one run; then both pushed with their manifest lists."""
        section = "10 multi-arch"
        env = self.fresh_storage("multiarch", keep=False)
        ensure_base_images(env, [BUSYBOX, MULTIARCH_ARM_BASE])
        medians: dict[str, Figure] = {}
        project = self.ws.root / "multiarch-family"
        for label, platforms in MULTIARCH_RUNS.items():
            samples = []
            for run in range(max(1, min(self.runs, 3))):
                # A new stamp each run: every image is out of date and no layer is cached.
                write_multiarch_family(project, platforms, stamp=f"{label} {run} {time.time()}")
                spec = str(project / "lowbuild.yaml")
                build = [*LOWBUILD, "build", "-f", spec, "-e", "podman", "--jobs", str(self.jobs)]
                timed = run_timed(build, env=env)
                samples.append(timed.seconds)
                say(f"multi-arch {label} run {run + 1}: {timed.seconds:.1f}s")
            medians[label] = self.results.add(
                figure_of(section, f"cold build, 3 images, {label}", samples)
            )
        native, foreign, both = (medians[label] for label in MULTIARCH_RUNS)
        self.results.add(
            figure_of(section, "arm64 under qemu / amd64", [ratio(foreign, native)], "x")
        )
        summed = native.median + foreign.median
        self.results.goals.append(
            Goal(
                section,
                "both platforms in one run cost no more than the two runs one after the other",
                f"{both.median:.1f} s vs {summed:.1f} s",
                both.median <= summed * 1.05,
            )
        )
        with local_registry(self.ws.root / "multiarch-registry") as (host, _log):
            push = [*LOWBUILD, "push", "-f", str(project / "lowbuild.yaml"), "-e", "podman"]
            timed = run_timed([*push, "--to", f"{host}/multiarch", "--no-tls-verify"], env=env)
        self.results.add(
            figure_of(
                section,
                "push of 6 variants + 3 manifest lists (first push)",
                [timed.seconds],
                note="each variant by digest, then one list per image",
            )
        )

    def plan(self) -> None:
        section = "6 planning at scale"
        env = self.ws.storage_env()
        ensure_base_images(env, [BUSYBOX])
        medians = {}
        for count in (500, 2000):
            family = self.ws.root / "plan" / f"family-{count}"
            if not (family / "lowbuild.yaml").exists():
                write_family(family, count, namespace="lowbuildplan", base=BUSYBOX)
            runs = self.runs if count == 500 else max(1, min(self.runs, 3))
            samples = [
                run_timed(
                    [
                        *LOWBUILD,
                        "plan",
                        "-f",
                        str(family / "lowbuild.yaml"),
                        "-e",
                        "podman",
                        "--json",
                    ],
                    env=env,
                ).seconds
                for _ in range(runs)
            ]
            say(f"plan {count}: {', '.join(f'{s:.2f}s' for s in samples)}")
            medians[count] = self.results.add(
                figure_of(section, f"lowbuild plan, {count} images", samples)
            )
        growth = ratio(medians[2000], medians[500])
        self.results.add(figure_of(section, "2,000 / 500", [growth], "x"))
        self.results.goals.append(
            Goal(
                section,
                "500 images under 2 s; 2,000 under 4x the 500 time",
                f"{medians[500].median:.2f} s; {growth:.2f}x",
                medians[500].median < 2 and growth < 4,
            )
        )
        self.results.goals.append(
            Goal(
                section,
                "2,000 images planned under 4 s",
                f"{medians[2000].median:.2f} s",
                medians[2000].median < 4,
            )
        )
        # A no-op build of a generated 200-image family (built once first, not timed).
        family = self.ws.root / "plan" / "family-noop-200"
        if not (family / "lowbuild.yaml").exists():
            write_family(family, 200, namespace="lowbuildnoop", base=BUSYBOX)
        build = [*LOWBUILD, "build", "-f", str(family / "lowbuild.yaml"), "-e", "podman"]
        say("preparing: the 200-image family built once (the first time: a few minutes)")
        run_timed([*build, "--jobs", str(self.jobs), "--progress", "quiet"], env=env)
        samples = []
        for _ in range(self.runs):
            timed = run_timed([*build, "--json"], env=env)
            if built_names(timed.output):
                raise BenchFailed(f"the 200-image no-op rebuilt {built_names(timed.output)}")
            samples.append(timed.seconds)
        say(f"no-op of 200 images: {', '.join(f'{s:.2f}s' for s in samples)}")
        f_noop = self.results.add(figure_of(section, "lowbuild build no-op, 200 images", samples))
        self.results.goals.append(
            Goal(
                section,
                "a no-op build of 200 images under 2 s",
                f"{f_noop.median:.2f} s",
                f_noop.median < 2,
            )
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 runs, smaller inputs, no cold builds"
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure (default 5; --quick 2)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-results", help="results directory"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/lowbuild-bench"), help="scratch directory"
    )
    parser.add_argument("--jobs", type=int, default=2, help="lowbuild build --jobs")
    parser.add_argument(
        "--fetch-rate",
        type=float,
        default=50e6,
        help="bytes/s per connection of the loopback server",
    )
    args = parser.parse_args(argv)
    # Timed as installed: pip compiles a wheel's modules; an editable checkout run with
    # PYTHONDONTWRITEBYTECODE would compile lowbuild on every command instead.
    subprocess.run(
        [str(PYTHON), "-m", "compileall", "-q", str(REPO / "lowbuild")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    sections = args.only or [s for s in SECTIONS if not (args.quick and s == "cold")]
    runs = args.runs or (2 if args.quick else 5)
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results()
    load = os.getloadavg()
    results.notes.append(
        f"{platform.node()}: {os.cpu_count()} CPUs, load {load[0]:.2f} at start; runs {runs}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    bench = Bench(
        ws=Workspace(args.work),
        runs=runs,
        quick=args.quick,
        results=results,
        jobs=args.jobs,
        fetch_rate=args.fetch_rate,
    )
    steps: dict[str, Callable[[], None]] = {
        "noop": bench.noop,
        "leaf": bench.leaf,
        "cold": bench.cold,
        "pack": bench.pack,
        "fetch": bench.fetch,
        "plan": bench.plan,
        "registry": bench.registry,
        "hosts": bench.hosts,
        "multiarch": bench.multiarch,
    }
    code = 0
    for section in SECTIONS:
        if section not in sections:
            continue
        say(f"section {section}")
        started = time.monotonic()
        try:
            steps[section]()
        except BenchFailed as exc:
            results.notes.append(f"section {section} failed: {str(exc).splitlines()[0]}")
            say(f"section {section} FAILED: {exc}")
            code = 1
        say(f"section {section} done in {time.monotonic() - started:.0f}s")
    load = os.getloadavg()
    results.notes.append(f"load at end {load[0]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results.to_json(), indent=2) + "\n")
    table = markdown_table(results)
    (args.out / "bench.md").write_text(table)
    print(table)
    return code


if __name__ == "__main__":
    sys.exit(main())
