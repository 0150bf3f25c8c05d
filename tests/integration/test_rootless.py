"""lowbuild on a rootless CI runner: an unprivileged user builds and tests a family on its own
podman (and buildah) storage, with its own cache, and `lowbuild doctor` explains what such a
user lacks.

Every user here is made by the test (useradd, a subordinate id range that collides with
nobody's, set by `usermod --add-subuids`) and removed at teardown with its processes, home
and container storage. lowbuild runs as that user through `runuser` with a clean
environment (HOME, USER, PATH, XDG_RUNTIME_DIR, PYTHONPATH), so no state of root's leaks
in. The user's Python sees a copy of the lowbuild package and of its runtime dependencies
(root's venv may live where the user cannot read), run by an interpreter the user can
execute. The busybox base image reaches the user's storage the way a CI admin would bring
it: root `podman save`s it into a readable archive and the user `podman load`s it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from live_services import BASE_IMAGE, free_port, running_registry, secure_registry_files
from packaging.requirements import Requirement

import lowbuild
from lowbuild.doctor.checks import ROOTLESS_OVERLAY_KERNEL
from lowbuild.doctor.facts import free_subid_range, kernel_version

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root"),
]

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STORAGE_VFS = '[storage]\ndriver = "vfs"\n'
# overlay without a mount program: Linux 5.13+ mounts it inside a user namespace.
STORAGE_OVERLAY = '[storage]\ndriver = "overlay"\n'
# Rootless podman's own network (slirp4netns) needs /dev/net/tun, root-only on many hosts:
# the runner's containers, RUN steps and smoke tests use the host's network instead.
NETNS_HOST = '[containers]\nnetns = "host"\n'
# overlay through fuse-overlayfs: what many rootless guides set up, and what breaks on a
# host whose /dev/fuse only root may open.
STORAGE_FUSE_OVERLAY = (
    '[storage]\ndriver = "overlay"\n\n'
    '[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n'
)


# ---- the Python the user runs lowbuild with ----------------------------------------------


def runtime_distributions(root: str = "lowbuild") -> set[str]:
    """`root` and every distribution it needs at run time (extras left out)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for line in importlib.metadata.distribution(key).requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def copy_runtime(dest: Path) -> None:
    """lowbuild's package (as it is in this checkout) and its runtime dependencies'
    installed files, into `dest`, for PYTHONPATH."""
    for key in runtime_distributions():
        if key == "lowbuild":  # installed editable: copy the package itself
            shutil.copytree(
                Path(lowbuild.__file__).parent,
                dest / "lowbuild",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            continue
        dist = importlib.metadata.distribution(key)
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or "__pycache__" in file.parts or not source.is_file():
                continue
            (dest / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / file)


def python_for(user: str) -> str:
    """An interpreter `user` may execute, of this interpreter's version (the copied
    dependencies hold compiled modules for it)."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [
        str(Path(sys.executable).resolve()),
        shutil.which(f"python{want}", path=CLEAN_PATH),
        shutil.which("python3", path=CLEAN_PATH),
    ]
    for candidate in dict.fromkeys(c for c in candidates if c):
        done = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                candidate,
                "-c",
                "import sys; print('%d.%d' % sys.version_info[:2])",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": CLEAN_PATH},
        )
        if done.returncode == 0 and done.stdout.strip() == want:
            return candidate
    pytest.fail(f"no Python {want} that user {user} may run (tried {candidates})", pytrace=False)


# ---- users made by the test ----------------------------------------------------------------


@dataclass(frozen=True)
class RunnerUser:
    """An unprivileged user of this test, and how to run things as it."""

    name: str
    uid: int
    home: Path
    runtime_dir: Path
    python: str
    pythonpath: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": CLEAN_PATH,
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "PYTHONPATH": str(self.pythonpath),
            "COLUMNS": "200",
            **extra,
        }

    def run(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        timeout: float = 600,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # `env -i`: runuser keeps root's environment otherwise.
        env_args = [f"{k}={v}" for k, v in self.env().items()]
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *env_args, *argv],
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )

    def lowbuild(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([self.python, "-m", "lowbuild", *args], cwd=cwd)

    def write(self, relative: str, text: str) -> Path:
        """Write a file in the user's home, owned by the user."""
        path = self.home / relative
        self.run(["mkdir", "-p", str(path.parent)])
        done = subprocess.run(
            ["runuser", "-u", self.name, "--", "tee", str(path)],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return path


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except OSError:  # exited meanwhile
                continue
    return found


def _user_exists(name: str) -> bool:
    return subprocess.run(["id", name], capture_output=True, check=False).returncode == 0


def _remove_user(name: str, uid: int, subids: tuple[int, int] | None) -> None:
    # podman's pause process (it holds the user namespace) and anything else the user left.
    for _ in range(3):
        pids = _processes_of(uid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
    if subids:
        first, last = subids
        subprocess.run(
            [
                "usermod",
                "--del-subuids",
                f"{first}-{last}",
                "--del-subgids",
                f"{first}-{last}",
                name,
            ],
            capture_output=True,
            check=False,
        )
    # -r: the home, and with it the user's container storage and cache.
    subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


@dataclass(frozen=True)
class Scratch:
    """Root-owned, world-readable: the dependency copy and the base image archive."""

    root: Path
    pythonpath: Path
    base_archive: Path


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    for tool in ("useradd", "usermod", "userdel", "runuser", "podman"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `bash scripts/provision.sh`", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="lowbuild-rootless-"))
    root.chmod(0o755)  # the users traverse it to their runtime dirs and read the copies
    try:
        pythonpath = root / "python"
        copy_runtime(pythonpath)
        archive = root / "busybox.tar"
        subprocess.run(
            ["podman", "save", "--format", "docker-archive", "--output", str(archive), BASE_IMAGE],
            check=True,
            capture_output=True,
        )
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield Scratch(root=root, pythonpath=pythonpath, base_archive=archive)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def make_user(scratch: Scratch) -> Iterator[Callable[..., RunnerUser]]:
    """`make_user(subids=True, storage_conf=STORAGE_VFS, containers_conf="")`: a new user
    with these files under ~/.config/containers/ and the base image in its own storage.
    Every user made is removed at the end of the module."""
    made: list[tuple[str, int, tuple[int, int] | None]] = []

    def make(
        *, subids: bool = True, storage_conf: str = STORAGE_VFS, containers_conf: str = ""
    ) -> RunnerUser:
        name = f"lbrl{secrets.token_hex(4)}"
        ids = (
            free_subid_range(Path("/etc/subuid").read_text(), Path("/etc/subgid").read_text())
            if subids
            else None
        )
        # SUB_UID_COUNT=0: useradd would otherwise give every new user a range itself.
        subprocess.run(
            [
                "useradd",
                "--create-home",
                "--shell",
                "/bin/sh",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                name,
            ],
            check=True,
        )
        uid = int(
            subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True).stdout
        )
        made.append((name, uid, ids))
        if ids:
            subprocess.run(
                [
                    "usermod",
                    "--add-subuids",
                    f"{ids[0]}-{ids[1]}",
                    "--add-subgids",
                    f"{ids[0]}-{ids[1]}",
                    name,
                ],
                check=True,
            )
        runtime_dir = scratch.root / f"run-{uid}"
        runtime_dir.mkdir(mode=0o700)
        os.chown(runtime_dir, uid, uid)
        user = RunnerUser(
            name=name,
            uid=uid,
            home=Path(f"~{name}").expanduser(),
            runtime_dir=runtime_dir,
            python=python_for(name),
            pythonpath=scratch.pythonpath,
        )
        user.write(".config/containers/storage.conf", storage_conf)
        if containers_conf:
            user.write(".config/containers/containers.conf", containers_conf)
        loaded = user.run(["podman", "load", "--input", str(scratch.base_archive)])
        assert loaded.returncode == 0, loaded.stderr
        return user

    yield make
    for name, uid, ids in made:
        _remove_user(name, uid, ids)
    still_there = [name for name, _, _ in made if _user_exists(name)]
    subids_left = [
        line
        for line in Path("/etc/subuid").read_text().splitlines()
        + Path("/etc/subgid").read_text().splitlines()
        if line.split(":")[0] in {name for name, _, _ in made}
    ]
    assert not still_there and not subids_left, (still_there, subids_left)


@pytest.fixture(scope="module")
def runner(make_user: Callable[..., RunnerUser]) -> RunnerUser:
    """The CI runner user: subordinate ids, vfs storage, the host's network, the base image."""
    return make_user(containers_conf=NETNS_HOST)


@pytest.fixture(scope="module")
def overlay_runner(make_user: Callable[..., RunnerUser]) -> RunnerUser:
    """A runner like `runner`, whose storage uses the kernel's overlay instead of vfs."""
    release = os.uname().release
    version = kernel_version(release)
    if version is None or version < ROOTLESS_OVERLAY_KERNEL:
        pytest.skip(f"kernel {release} cannot mount overlay rootless: vfs is the only driver")
    return make_user(storage_conf=STORAGE_OVERLAY, containers_conf=NETNS_HOST)


@pytest.fixture(scope="module")
def bare_user(make_user: Callable[..., RunnerUser]) -> RunnerUser:
    """A user nobody prepared for podman: no subordinate ids, no containers.conf."""
    return make_user(subids=False)


# ---- the family ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    project: Path
    namespace: str
    artifact_sha256: str
    token: str
    port: int


def write_family(user: RunnerUser, *, namespace: str) -> Family:
    """base (a file:// artifact) → app (a pack) → web (an HTTP smoke test), in the user's home.

    base declares `network: none`; app and web use the default network, the host's for
    this user (NETNS_HOST), so web's server listens on a free port above the privileged
    ones.
    """
    token = secrets.token_hex(8)
    port = free_port()
    project = f"projects/{namespace}"
    tool = f"tool {token}\n"
    artifact = user.write(f"inputs/{namespace}/tool.txt", tool)
    sha256 = subprocess.run(
        ["sha256sum", str(artifact)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    user.write(
        f"{project}/lowbuild.yaml",
        f'name: rootless\nnamespace: {namespace}\ncontexts: ["contexts/*"]\n',
    )
    user.write(
        f"{project}/contexts/base/image.yaml",
        f"""\
name: base
network: none
artifacts:
  - file: tool.txt
    urls: ["file://{artifact}"]
    sha256: {sha256}
test:
  command: ["cat", "/opt/tool.txt"]
  expect: "tool {token}"
""",
    )
    user.write(
        f"{project}/contexts/base/Dockerfile",
        f"FROM {BASE_IMAGE}\nCOPY tool.txt /opt/tool.txt\nRUN grep -q {token} /opt/tool.txt\n",
    )
    user.write(
        f"{project}/contexts/app/image.yaml",
        f"""\
name: app
parent: base
packs:
  - into: site.tar.gz
    from: site/
test:
  command: ["sh", "-c", "cat /www/index.html && ls /opt"]
  expect: "hello {token}"
""",
    )
    user.write(f"{project}/contexts/app/site/index.html", f"hello {token}\n")
    user.write(
        f"{project}/contexts/app/Dockerfile",
        f"FROM {namespace}/base:latest\nADD site.tar.gz /www/\nRUN test -s /www/index.html\n",
    )
    user.write(
        f"{project}/contexts/web/image.yaml",
        f"""\
name: web
parent: app
test:
  http: {{port: {port}, path: /index.html, expect: "hello {token}", timeout: 30}}
""",
    )
    user.write(
        f"{project}/contexts/web/Dockerfile",
        f'FROM {namespace}/app:latest\nCMD ["httpd", "-f", "-p", "{port}", "-h", "/www"]\n',
    )
    return Family(
        project=user.home / project,
        namespace=namespace,
        artifact_sha256=sha256,
        token=token,
        port=port,
    )


def root_has_image(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], check=False).returncode == 0


def lowbuild_leftovers(uid: int) -> list[Path]:
    """What lowbuild, run as `uid`, left in the shared temporary directories (root's
    concurrent builds leave their own entries there for a moment: those are not counted)."""
    found = []
    for directory in (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")):
        for entry in directory.iterdir() if directory.is_dir() else ():
            with contextlib.suppress(OSError):  # gone meanwhile
                if "lowbuild" in entry.name and entry.lstat().st_uid == uid:
                    found.append(entry)
    return found


@pytest.mark.parametrize(
    ("engine", "storage"), [("podman", "vfs"), ("buildah", "vfs"), ("podman", "overlay")]
)
def test_unprivileged_user_builds_and_tests_a_family_with_its_own_cache(
    request: pytest.FixtureRequest, engine: str, storage: str
) -> None:
    runner: RunnerUser = request.getfixturevalue("runner" if storage == "vfs" else "overlay_runner")
    family = write_family(runner, namespace=f"rootless-{engine}-{secrets.token_hex(3)}")
    root_cache = Path(platformdirs.user_cache_dir("lowbuild"))

    started = time.monotonic()
    done = runner.lowbuild("build", "--engine", engine, "--test", "--json", cwd=family.project)
    seconds = time.monotonic() - started

    assert done.returncode == 0, done.stdout + done.stderr
    records = {r["image"]: r for r in json.loads(done.stdout)}
    assert {name: r["state"] for name, r in records.items()} == dict.fromkeys(
        ("base", "app", "web"), "built"
    ), records
    for name in ("base", "app", "web"):
        assert records[name]["test"]["passed"] is True, records[name]
    print(f"rootless {engine} ({storage}) family build + smoke tests: {seconds:.1f}s")

    # The artifact is in the user's own cache (the default place under its home), and the
    # images in the user's own storage: root's cache and root's podman never saw either.
    user_cache = runner.home / ".cache/lowbuild/sha256" / family.artifact_sha256
    assert user_cache.is_file()
    assert user_cache.stat().st_uid == runner.uid
    assert not (root_cache / "sha256" / family.artifact_sha256).exists()
    listed = runner.run(["podman", "images", "--format", "{{.Repository}}"]).stdout.split()
    for name in ("base", "app", "web"):
        assert f"localhost/{family.namespace}/{name}" in listed
        assert not root_has_image(f"{family.namespace}/{name}:latest")
    assert lowbuild_leftovers(runner.uid) == []

    # The second run finds everything up to date, without root, from the same cache.
    again = runner.lowbuild("build", "--engine", engine, "--json", cwd=family.project)
    assert again.returncode == 0, again.stderr
    assert {r["state"] for r in json.loads(again.stdout)} == {"up-to-date"}


# ---- publishing and the registry cache as an unprivileged user ----------------------------

PASSWORD = "rootless-s3cret"


def test_rootless_runners_publish_with_their_own_login_and_a_fresh_one_pulls_the_family(
    runner: RunnerUser, make_user: Callable[..., RunnerUser], tmp_path: Path
) -> None:
    """A TLS registry with logins, its CA trusted in each user's own certs.d; each user
    logs in with podman into its own auth file. The first runner builds, tests, pushes
    and fills the registry cache; a second runner (empty storage, empty cache) builds
    nothing and passes every smoke test."""
    files = secure_registry_files(tmp_path / "tls", user="ci", password=PASSWORD)
    port = free_port()
    host = f"127.0.0.1:{port}"
    fresh = make_user(containers_conf=NETNS_HOST)
    for user in (runner, fresh):
        user.write(f".config/containers/certs.d/{host}/ca.crt", files.ca.read_text())
    with running_registry(tmp_path / "registry", port=port, secured=files) as registry:
        for user in (runner, fresh):
            login = user.run(
                ["podman", "login", "--username", "ci", "--password-stdin", host],
                input=PASSWORD,
            )
            assert login.returncode == 0, login.stderr
        family = write_family(runner, namespace=f"rootless-push-{secrets.token_hex(3)}")
        prefix, cache = f"{host}/{family.namespace}", f"{host}/{family.namespace}-cache"

        first = runner.lowbuild(
            "build", "--test", "--push", "--to", prefix, "--cache-to", cache, "--json",
            cwd=family.project,
        )  # fmt: skip

        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{prefix}/web@sha256:" in first.stderr
        shown = [first.stdout, first.stderr]
        shown += [p.read_text(errors="replace") for p in family.project.rglob(".lowbuild/**/*")
                  if p.is_file()]  # fmt: skip
        assert not any(PASSWORD in text for text in shown)
        assert registry.writes() > 0

        # The second runner: its own checkout of the project, nothing in its storage or cache.
        project = fresh.home / "projects" / family.project.name
        shutil.copytree(family.project, project, ignore=shutil.ignore_patterns(".lowbuild"))
        subprocess.run(["chown", "-R", f"{fresh.uid}:{fresh.uid}", str(fresh.home)], check=True)
        pulled = fresh.lowbuild("build", "--test", "--cache-from", cache, "--json", cwd=project)

    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    records = {r["image"]: r for r in json.loads(pulled.stdout)}
    assert {n: r["state"] for n, r in records.items()} == dict.fromkeys(
        ("base", "app", "web"), "pulled"
    )
    assert all(r["test"]["passed"] for r in records.values())
    assert not (fresh.home / ".cache/lowbuild/sha256" / family.artifact_sha256).exists()


# ---- doctor as an unprivileged user --------------------------------------------------------


def doctor_report(user: RunnerUser) -> tuple[int, dict[str, Any], dict[str, dict[str, Any]]]:
    done = user.lowbuild("doctor", "--engine", "podman", "--json")
    assert done.stdout.strip(), done.stderr
    (report,) = json.loads(done.stdout)
    return done.returncode, report, {c["name"]: c for c in report["checks"]}


def tun_usable_by(user: RunnerUser) -> bool:
    return user.run(["sh", "-c", "test -r /dev/net/tun && test -w /dev/net/tun"]).returncode == 0


def test_doctor_as_the_prepared_runner_says_everything_is_ok(runner: RunnerUser) -> None:
    code, report, checks = doctor_report(runner)

    assert code == 0, report
    assert report["ok"], report
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    assert "has subordinate uid and gid ranges" in checks["subuid/subgid"]["detail"]
    assert 'netns = "host"' in checks["rootless network"]["detail"]
    storage = checks["storage driver"]["detail"]
    assert "vfs" in storage and str(runner.home / ".config/containers/storage.conf") in storage
    assert checks["build"]["ok"] and checks["run"]["ok"]


def test_doctor_says_when_rootless_networking_cannot_start_and_what_to_set(
    bare_user: RunnerUser,
) -> None:
    if tun_usable_by(bare_user):
        pytest.skip("/dev/net/tun is usable by unprivileged users here: slirp4netns works")

    _, report, checks = doctor_report(bare_user)

    network = checks["rootless network"]
    assert not network["ok"]
    assert "/dev/net/tun" in network["detail"] and "slirp4netns" in network["detail"]
    assert 'netns = "host"' in network["fix"]
    assert str(bare_user.home / ".config/containers/containers.conf") in network["fix"]
    # The probe still shows that building and running work, on no network at all.
    assert checks["build"]["ok"] and "--network none" in checks["build"]["detail"]
    assert checks["run"]["ok"]
    assert report["ok"]


def test_doctor_names_the_missing_subordinate_ids_and_the_command_that_adds_them(
    bare_user: RunnerUser,
) -> None:
    _, _, checks = doctor_report(bare_user)

    subids = checks["subuid/subgid"]
    assert not subids["ok"]
    assert "/etc/subuid" in subids["detail"] and "/etc/subgid" in subids["detail"]
    assert "usermod --add-subuids" in subids["fix"] and bare_user.name in subids["fix"]
    # The range it proposes collides with no range already given out.
    found = re.search(r"--add-subuids (\d+)-(\d+)", subids["fix"])
    assert found
    first, last = int(found.group(1)), int(found.group(2))
    for line in Path("/etc/subuid").read_text().splitlines():
        _, start, count = line.split(":")
        assert last < int(start) or first >= int(start) + int(count), line


def test_doctor_says_fuse_overlayfs_cannot_mount_and_how_to_use_vfs(
    make_user: Callable[..., RunnerUser],
) -> None:
    user = make_user(storage_conf=STORAGE_FUSE_OVERLAY)
    if user.run(["sh", "-c", "test -r /dev/fuse && test -w /dev/fuse"]).returncode == 0:
        pytest.skip("/dev/fuse is usable by unprivileged users here: fuse-overlayfs works")

    code, report, checks = doctor_report(user)

    storage = checks["storage driver"]
    assert not storage["ok"]
    assert "/dev/fuse" in storage["detail"] and "fuse-overlayfs" in storage["detail"]
    assert 'driver = "vfs"' in storage["fix"]
    assert str(user.home / ".config/containers/storage.conf") in storage["fix"]
    assert "podman system reset" in storage["fix"]
    # And the real build fails as predicted: the engine is reported broken, exit 3.
    assert not report["ok"] and code == 3
    assert not checks["build"]["ok"]
    assert "fuse" in checks["build"]["detail"]
