"""A multi-platform family built for linux/amd64 and linux/arm64 on real engines: each
variant of the architecture it claims, its smoke test run under qemu emulation, and one
manifest list per image pushed to a real registry with every platform's digest recorded.

The arm64 base is scripts/provision.sh's (busybox-static:arm64 from the host's own
Debian mirror, no registry); foreign RUN steps need binfmt_misc with a qemu-aarch64
handler. Where this host has none, every test here is skipped, and -ra shows why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from json_outputs import conforming
from live_services import BASE_IMAGE, Registry
from test_publish import Family

from lowbuild.doctor.checks import emulation_checks
from lowbuild.spec.platforms import native_platform

ARM = "linux/arm64"
ARM_BASE = f"{BASE_IMAGE}-linux-arm64"
LIST_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)


def _emulation_missing() -> str | None:
    if native_platform() != "linux/amd64":
        return f"written for an amd64 host (this is {native_platform()})"
    broken = [c for c in emulation_checks(["linux/amd64", ARM]) if not c.ok]
    if broken:
        return f"no arm64 emulation here: {broken[0].detail} ({broken[0].fix})"
    return None


pytestmark = pytest.mark.skipif(_emulation_missing() is not None, reason=str(_emulation_missing()))

# base: built on busybox for both; app: serves its own architecture over HTTP (shell
# script app); tool: arm64 only, checks what it was built on.
IMAGES: dict[str, tuple[str, str | None]] = {
    "base": (
        "name: base\ntest:\n  command: [uname, -m]\n",
        f"FROM {BASE_IMAGE}\nRUN uname -m > /built-on\n",
    ),
    "app": (
        "name: app\nparent: base\ntest:\n  http: {port: 8080, path: /arch}\n",
        "FROM {ns}/base:1\nCOPY serve.sh /serve.sh\nRUN sh /serve.sh prepare\n"
        'CMD ["sh", "/serve.sh"]\n',
    ),
    "tool": (
        "name: tool\nparent: base\nplatforms: [linux/arm64]\n"
        "test:\n  command: [cat, /built-on]\n  expect: aarch64\n",
        'FROM {ns}/base:1\nRUN test "$(uname -m)" = aarch64\n',
    ),
}
# A commit recipe (the tutorial's `docker commit`): its working container runs per
# platform too, and the commit keeps that platform.
IMAGES["hand"] = (
    "name: hand\nkind: commit\ncommit:\n  base: base\n  author: me\n  message: by hand\n"
    "  steps:\n    - run: uname -m > /hand-arch\n"
    'test:\n  command: [sh, -c, \'test "$(cat /hand-arch)" = "$(uname -m)"\']\n',
    None,
)
SERVE = """\
if [ "$1" = prepare ]; then mkdir -p /www && uname -m > /www/arch; exit 0; fi
exec httpd -f -p 8080 -h /www
"""


@pytest.fixture
def family(tmp_path: Path) -> Iterator[Family]:
    namespace = f"lbarch{uuid.uuid4().hex[:8]}"
    root = tmp_path / "family"
    (root / "contexts").mkdir(parents=True)
    (root / "lowbuild.yaml").write_text(
        f"name: arches\nnamespace: {namespace}\ntag: '1'\nplatforms: [linux/amd64, linux/arm64]\n"
    )
    for name, (image_yaml, dockerfile) in IMAGES.items():
        context = root / "contexts" / name
        context.mkdir()
        (context / "image.yaml").write_text(image_yaml)
        if dockerfile is not None:
            (context / "Dockerfile").write_text(dockerfile.replace("{ns}", namespace))
    (root / "contexts" / "app" / "serve.sh").write_text(SERVE)
    made = Family(root, namespace, {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache")})
    yield made
    for cli in ("podman", "docker"):
        listed = subprocess.run(
            [cli, "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.split()
        mine = [ref for ref in listed if namespace in ref]
        if mine:
            subprocess.run([cli, "rmi", "--force", *mine], capture_output=True, timeout=300)


def architecture(cli: str, ref: str) -> str:
    out = subprocess.run(
        [cli, "image", "inspect", "--format", "{{.Architecture}}", ref],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def manifest_list(registry: Registry, repository: str, tag: str) -> tuple[str, dict[str, str]]:
    """The registry's list for repository:tag: its digest, and each platform's digest."""
    answer = httpx.get(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": ", ".join(LIST_TYPES)},
        timeout=10,
    )
    answer.raise_for_status()
    assert answer.headers["Content-Type"] in LIST_TYPES
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
        for m in answer.json()["manifests"]
    }
    return answer.headers["Docker-Content-Digest"], platforms


@pytest.mark.parametrize("engine", ["podman", "buildah", "docker", "buildx"])
def test_a_family_is_built_tested_and_published_per_platform(
    family: Family, registry: Registry, engine: str
) -> None:
    cli = "docker" if engine in ("docker", "buildx") else "podman"
    built = family.lowbuild("build", "--test", "--json", "--progress", "quiet", engine=engine)
    assert built.returncode == 0, built.stderr + built.stdout
    records = {record["image"]: record for record in conforming("build", built.stdout)}
    assert sorted(records) == [
        "app@linux-amd64",
        "app@linux-arm64",
        "base@linux-amd64",
        "base@linux-arm64",
        "hand@linux-amd64",
        "hand@linux-arm64",
        "tool@linux-arm64",
    ]
    for key, record in records.items():
        assert record["state"] == "built"
        assert record["test"]["passed"], record["test"]
        arch = key.rpartition("-")[2]
        assert architecture(cli, record["ref"]) == arch
    # The plain tag is the native variant (what `run NS/app:1` starts here).
    assert architecture(cli, f"{family.namespace}/app:1") == "amd64"
    served = subprocess.run(
        [cli, "run", "--rm", f"{family.namespace}/app:1-linux-arm64", "cat", "/www/arch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.stdout.strip() == "aarch64"

    prefix = f"{registry.host}/{family.namespace}-{engine}"
    pushed = family.lowbuild("push", "--to", prefix, "--no-tls-verify", "--json", engine=engine)
    assert pushed.returncode == 0, pushed.stderr + pushed.stdout
    outcomes = {(o["image"]): o for o in conforming("push", pushed.stdout)}
    repository = f"{family.namespace}-{engine}/app"
    digest, platforms = manifest_list(registry, repository, "1")
    assert sorted(platforms) == ["linux/amd64", ARM]
    assert outcomes["app"]["digest"] == digest
    assert outcomes["app"]["ref"] == f"{prefix}/app@{digest}"
    # Each platform's image is the variant pushed under its own tag, by digest.
    assert outcomes["app"]["platforms"] == platforms
    assert platforms[ARM] == outcomes["app@linux-arm64"]["digest"]
    assert outcomes["app@linux-arm64"]["tags"] == [f"{prefix}/app:1-linux-arm64"]
    # tool is arm64 only: a one-platform list.
    assert sorted(manifest_list(registry, f"{family.namespace}-{engine}/tool", "1")[1]) == [ARM]
    published = json.loads((family.root / ".lowbuild" / "published.json").read_text())
    assert published["images"]["app"]["registries"][prefix]["ref"] == f"{prefix}/app@{digest}"


def test_plan_and_build_narrow_to_one_platform(family: Family) -> None:
    planned = family.lowbuild("plan", "--platform", ARM, "--json", engine="podman")
    assert planned.returncode == 0, planned.stderr
    assert [r["image"] for r in json.loads(planned.stdout)["images"]] == [
        "base@linux-arm64",
        "app@linux-arm64",
        "hand@linux-arm64",
        "tool@linux-arm64",
    ]
    built = family.lowbuild("build", "tool", "--platform", ARM, engine="podman")
    assert built.returncode == 0, built.stderr
    assert architecture("podman", f"{family.namespace}/tool:1-linux-arm64") == "arm64"
    # Every variant is current: prune keeps them all, `images` lists each.
    pruned = family.lowbuild("prune", engine="podman")
    assert pruned.returncode == 0, pruned.stderr
    assert architecture("podman", f"{family.namespace}/tool:1-linux-arm64") == "arm64"
    assert architecture("podman", f"{family.namespace}/base:1-linux-arm64") == "arm64"
    listed = family.lowbuild("images", "--json", engine="podman")
    assert listed.returncode == 0, listed.stderr
    rows = {row["image"]: row for row in conforming("images", listed.stdout)["images"]}
    assert rows["tool@linux-arm64"]["parent"] == "base@linux-arm64"
    assert rows["tool@linux-arm64"]["id"] is not None
    assert rows["app@linux-amd64"]["id"] is None  # not built: --platform left it out
    wrong = family.lowbuild("build", "--platform", "linux/s390x", engine="podman")
    assert wrong.returncode == 2
    assert "not built for it" in wrong.stderr


def test_a_failing_test_names_its_platform_and_a_missing_base_says_how(family: Family) -> None:
    # The arm64 variant's test expects what only an amd64 machine prints.
    app = family.root / "contexts" / "app" / "image.yaml"
    app.write_text(
        "name: app\nparent: base\nplatforms: [linux/amd64, linux/arm64]\n"
        "test:\n  command: [cat, /www/arch]\n  expect: x86_64\n"
    )
    built = family.lowbuild("build", "app", "--test", "--progress", "plain", engine="podman")
    assert built.returncode == 1
    assert "test app@linux-arm64" in built.stderr + built.stdout
    assert "✓ test app@linux-amd64" in built.stderr + built.stdout
    # Under emulation the test may take 8x its (default 60 s) timeout, as its log says.
    logs = family.root / ".lowbuild" / "logs" / "latest"
    [log] = logs.glob("app@linux-arm64*.log")
    assert "linux/arm64 runs under emulation: timeout 480 s" in log.read_text()

    (family.root / "lowbuild.yaml").write_text(
        f"name: arches\nnamespace: {family.namespace}\ntag: '1'\n"
        "platforms: [linux/amd64, linux/arm64, linux/s390x]\n"
    )
    (family.root / "contexts" / "tool").rename(family.root / "tool-aside")
    failed = family.lowbuild("build", "base", engine="podman")
    assert failed.returncode == 2
    assert f"{BASE_IMAGE}-linux-s390x" in failed.stderr
    assert "bases:" in failed.stderr


def _podman_refs(env: dict[str, str]) -> list[str]:
    """`REF ARCH` of every tagged image of the podman storage `env` selects."""

    def podman(*args: str) -> str:
        return subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    refs = podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    refs = [ref for ref in refs if ref != "<none>:<none>"]
    arches = (
        podman("image", "inspect", "--format", "{{.Architecture}}", *refs).split() if refs else []
    )
    return sorted(f"{ref} {arch}" for ref, arch in zip(refs, arches, strict=True))


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)
def test_a_bundle_carries_every_platforms_bases_and_builds_both_offline(
    family: Family, tmp_path: Path
) -> None:
    bundle = tmp_path / "arches.bundle"
    exported = family.lowbuild("bundle", "export", str(bundle), "app", engine="podman")
    assert exported.returncode == 0, exported.stderr
    # A fresh podman storage and an empty cache, as on an air-gapped host.
    storage = tmp_path / "storage"
    conf = tmp_path / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{storage}/graph"\nrunroot = "{storage}/run"\n'
    )
    env = {
        **family.env,
        "CONTAINERS_STORAGE_CONF": str(conf),
        "LOWBUILD_CACHE": str(tmp_path / "empty-cache"),
    }
    offline = Family(family.root, family.namespace, env)
    try:
        assert _podman_refs(env) == []
        # A network namespace with nothing but its loopback (up: the HTTP test's port).
        no_net = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        no_net += [sys.executable, "-m", "lowbuild"]
        imported = subprocess.run(
            [*no_net, "bundle", "import", str(bundle), "--engine", "podman"],
            cwd=family.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert imported.returncode == 0, imported.stderr
        assert _podman_refs(env) == [f"{BASE_IMAGE} amd64", f"{ARM_BASE} arm64"]
        built = subprocess.run(
            [*no_net, "build", "app", "--offline", "--test", "--engine", "podman"],
            cwd=offline.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert built.returncode == 0, built.stderr + built.stdout
        refs = _podman_refs(env)
        for arch in ("amd64", "arm64"):
            assert f"localhost/{family.namespace}/app:1-linux-{arch} {arch}" in refs
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def test_the_registry_cache_works_per_platform(family: Family, registry: Registry) -> None:
    cache = f"{registry.host}/{family.namespace}-cache"
    pushed = family.lowbuild(
        "build", "base", "--cache-to", cache, "--no-tls-verify", engine="podman"
    )
    assert pushed.returncode == 0, pushed.stderr
    tags = registry.tags(f"{family.namespace}-cache/base")
    assert len(tags) == 2 and all(tag.startswith("lb-") for tag in tags)  # one per platform
    ids = {
        arch: architecture("podman", f"{family.namespace}/base:1-linux-{arch}")
        for arch in ("amd64", "arm64")
    }
    assert ids == {"amd64": "amd64", "arm64": "arm64"}
    for arch in ("amd64", "arm64"):
        subprocess.run(
            ["podman", "rmi", "--force", f"{family.namespace}/base:1-linux-{arch}"],
            capture_output=True,
            check=True,
            timeout=120,
        )
    subprocess.run(["podman", "rmi", "--force", f"{family.namespace}/base:1"], timeout=120)
    planned = family.lowbuild(
        "plan", "base", "--cache-from", cache, "--no-tls-verify", "--json", engine="podman"
    )
    assert planned.returncode == 0, planned.stderr
    actions = {r["image"]: r["action"] for r in conforming("plan", planned.stdout)["images"]}
    assert actions == {"base@linux-amd64": "pull", "base@linux-arm64": "pull"}
    pulled = family.lowbuild(
        "build", "base", "--cache-from", cache, "--no-tls-verify", "--json", engine="podman"
    )
    assert pulled.returncode == 0, pulled.stderr
    states = {r["image"]: r["state"] for r in json.loads(pulled.stdout)}
    assert states == {"base@linux-amd64": "pulled", "base@linux-arm64": "pulled"}
    assert architecture("podman", f"{family.namespace}/base:1-linux-arm64") == "arm64"


def test_a_run_narrowed_to_one_platform_pushes_no_partial_list(
    family: Family, registry: Registry
) -> None:
    prefix = f"{registry.host}/{family.namespace}-narrow"
    args = ("build", "base", "--platform", ARM, "--push", "--to", prefix, "--no-tls-verify")
    done = family.lowbuild(*args, "--json", engine="podman")
    assert done.returncode == 0, done.stderr
    [record] = conforming("build", done.stdout)
    assert record["image"] == "base@linux-arm64"
    assert [p["pushed"] for p in record["push"]] == [True]
    # Its own tag only: the plain one would be a list missing linux/amd64.
    assert registry.tags(f"{family.namespace}-narrow/base") == ["1-linux-arm64"]


def test_a_base_of_the_wrong_architecture_is_refused_before_any_build(family: Family) -> None:
    # Declared by mistake: the amd64 busybox as the arm64 base.
    (family.root / "lowbuild.yaml").write_text(
        f"name: arches\nnamespace: {family.namespace}\ntag: '1'\n"
        "platforms: [linux/amd64, linux/arm64]\n"
        f"bases:\n  - ref: {BASE_IMAGE}\n    platforms:\n      linux/arm64: {BASE_IMAGE}\n"
    )
    done = family.lowbuild("build", "base", engine="podman")
    assert done.returncode == 4, done.stderr
    assert f"base image {BASE_IMAGE}" in done.stderr
    assert "is built for amd64" in done.stderr and "wrong architecture" in done.stderr
    listed = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert family.namespace not in listed.stdout  # nothing was built


def test_doctor_checks_emulation_and_each_platforms_base(family: Family) -> None:
    done = family.lowbuild("doctor", "--json", engine="podman")
    assert done.returncode == 0, done.stderr
    [report] = conforming("doctor", done.stdout)
    emulation = {check["name"]: check for check in report["emulation"]}
    assert emulation["binfmt_misc"]["ok"] is True
    assert emulation[f"emulation {ARM}"]["ok"] is True
    assert "qemu-aarch64" in emulation[f"emulation {ARM}"]["detail"]
    bases = {check["name"]: check for check in report["family_bases"]}
    assert bases[ARM_BASE]["ok"] is True and "base@linux-arm64" in bases[ARM_BASE]["detail"]
    assert bases[BASE_IMAGE]["ok"] is True
    # The arm64 base declared as the amd64 image: doctor says so before a build would.
    (family.root / "lowbuild.yaml").write_text(
        f"name: arches\nnamespace: {family.namespace}\ntag: '1'\n"
        "platforms: [linux/amd64, linux/arm64]\n"
        f"bases:\n  - ref: {BASE_IMAGE}\n    platforms:\n      linux/arm64: {BASE_IMAGE}\n"
    )
    again = conforming("doctor", family.lowbuild("doctor", "--json", engine="podman").stdout)
    [check] = again[0]["family_bases"]
    assert check["ok"] is False
    assert check["detail"] == "built for amd64, but used for linux/arm64 by base@linux-arm64"


@pytest.mark.skipif(os.geteuid() != 0, reason="turns the host's qemu-aarch64 handler off and on")
def test_without_emulation_the_run_warns_first_and_the_failure_names_the_fix(
    family: Family,
) -> None:
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    handler.write_text("0")  # off for this one run: RUN steps of arm64 cannot execute
    try:
        done = family.lowbuild("build", "base", "--progress", "plain", engine="podman")
    finally:
        handler.write_text("1")
    assert handler.read_text().splitlines()[0] == "enabled"
    said = done.stderr + done.stdout
    assert done.returncode == 1, said
    assert "warning: emulation linux/arm64: qemu-aarch64 is registered but disabled" in said
    assert "exec format error" in said
    assert "linux/arm64 cannot run on this host" in said
    # The native variant is not held back by the foreign one.
    assert architecture("podman", f"{family.namespace}/base:1-linux-amd64") == "amd64"
