"""SBOMs and provenance written by real builds, on every engine.

A three-image family: `deb` (Debian bookworm, an artifact downloaded from a loopback
server and a pack), its child `child`, and `tiny` on busybox (no package manager). Each
SBOM must be valid CycloneDX 1.6, be the file the image's `lowbuild.sbom` label names, and
say what is really in the image; a no-op build must leave them alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from fault_server import FaultServer
from json_outputs import conforming
from live_services import BASE_IMAGE, Registry

from lowbuild.engines.base import BuildRequest, Engine

DEBIAN = "localhost/lowbuild/bookworm:latest"
TOOL = "tool-1.4.2.tar.gz"


def _tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"#!/bin/sh\necho tool 1.4.2\n"
        info = tarfile.TarInfo("tool-1.4.2/tool")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class SbomFamily:
    root: Path
    namespace: str
    env: dict[str, str]
    engine: Engine
    tool_url: str
    tool_sha: str

    def lowbuild(self, *args: str, engine: bool = True) -> subprocess.CompletedProcess[str]:
        chosen = ["--engine", self.engine.name] if engine else []
        return subprocess.run(
            [sys.executable, "-m", "lowbuild", *args, *chosen],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def ref(self, name: str) -> str:
        return f"{self.namespace}/{name}:1"

    def sbom_file(self, name: str) -> Path:
        return self.root / ".lowbuild" / "sbom" / f"{name}.cyclonedx.json"

    def sbom(self, name: str) -> dict[str, object]:
        data = self.sbom_file(name).read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data) is None
        loaded: dict[str, object] = json.loads(data)
        return loaded

    def label(self, name: str) -> str:
        info = self.engine.inspect_image(self.ref(name))
        assert info is not None, name
        return info.labels.get("lowbuild.sbom", "")


@pytest.fixture
def sbom_family(engine: Engine, tmp_path: Path) -> Iterator[SbomFamily]:
    for image in (DEBIAN, BASE_IMAGE):
        if engine.inspect_image(image) is None:
            pytest.fail(f"{image} is missing: run `bash scripts/provision.sh`", pytrace=False)
    payload = _tarball()
    namespace = f"lbsbom{uuid.uuid4().hex[:8]}"
    root = tmp_path / "family"
    with FaultServer() as server:
        server.add(TOOL, payload)
        url = server.url("ok", TOOL)
        sha = hashlib.sha256(payload).hexdigest()
        (root / "contexts").mkdir(parents=True)
        (root / "lowbuild.yaml").write_text(f"name: sbom\nnamespace: {namespace}\ntag: '1'\n")
        deb = root / "contexts" / "deb"
        (deb / "site").mkdir(parents=True)
        (deb / "site" / "index.html").write_text("hello\n")
        (deb / "Dockerfile").write_text(
            f"FROM {DEBIAN}\nCOPY {TOOL} code.tar.gz /opt/\nRUN echo deb > /etc/deb\n"
        )
        (deb / "image.yaml").write_text(
            "name: deb\n"
            f"artifacts:\n  - file: {TOOL}\n    urls: [{url}]\n    sha256: {sha}\n"
            "packs:\n  - {into: code.tar.gz, from: site/}\n"
        )
        child = root / "contexts" / "child"
        child.mkdir()
        (child / "Dockerfile").write_text(f"FROM {namespace}/deb:1\nRUN echo child > /etc/child\n")
        (child / "image.yaml").write_text("name: child\nparent: deb\n")
        tiny = root / "contexts" / "tiny"
        tiny.mkdir()
        (tiny / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo tiny > /etc/tiny\n")
        (tiny / "image.yaml").write_text("name: tiny\n")
        bare = root / "contexts" / "bare"  # no shell at all: nothing can be asked
        bare.mkdir()
        (bare / "note.txt").write_text("no shell here\n")
        (bare / "Dockerfile").write_text("FROM scratch\nCOPY note.txt /note.txt\n")
        (bare / "image.yaml").write_text("name: bare\n")
        env = {**os.environ, "LOWBUILD_CACHE": str(tmp_path / "cache")}
        made = SbomFamily(root, namespace, env, engine, url, sha)
        try:
            yield made
        finally:
            for name in ("child", "deb", "tiny", "bare"):
                if engine.inspect_image(made.ref(name)) is not None:
                    engine.remove_image(made.ref(name), force=True)


def _in_image(engine: Engine, ref: str, command: str) -> str:
    code, output = engine.run_once(image=ref, command=["sh", "-c", command], network="none")
    assert code == 0, output
    return output


def test_each_image_built_gets_a_valid_sbom_that_its_label_names(
    sbom_family: SbomFamily,
) -> None:
    family, engine = sbom_family, sbom_family.engine
    run = family.lowbuild("build", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("deb", "child", "tiny"):
        data = family.sbom_file(name).read_bytes()
        assert family.label(name) == "sha256:" + hashlib.sha256(data).hexdigest(), name
    assert len({family.label(n) for n in ("deb", "child", "tiny")}) == 3  # none inherited

    deb = family.sbom("deb")
    found = {c["bom-ref"]: c for c in deb["components"]}  # type: ignore[attr-defined]
    tool = found[f"artifact:{TOOL}"]
    assert tool["hashes"] == [{"alg": "SHA-256", "content": family.tool_sha}]
    assert tool["externalReferences"] == [{"type": "distribution", "url": family.tool_url}]
    assert (tool["name"], tool["version"]) == ("tool", "1.4.2")
    # the pack's digest is that of the file really in the image
    in_image = _in_image(engine, family.ref("deb"), "sha256sum /opt/code.tar.gz").split()[0]
    assert found["pack:code.tar.gz"]["hashes"] == [{"alg": "SHA-256", "content": in_image}]
    base = found[f"image:{DEBIAN}"]
    base_info = engine.inspect_image(DEBIAN)
    assert base_info is not None
    assert base["hashes"] == [{"alg": "SHA-256", "content": base_info.id.removeprefix("sha256:")}]
    # the OS packages are the image's own, with the versions dpkg reports inside it
    packages = {c["name"]: c["version"] for c in found.values() if c["type"] == "library"}
    listed = _in_image(engine, family.ref("deb"), "dpkg-query -W -f='${Package} ${Version}\\n'")
    assert packages == dict(line.split(" ", 1) for line in listed.strip().splitlines())
    assert "base-files" in packages and "dpkg" in packages

    # the child names its parent by the ID the parent has now (labelled)
    child = family.sbom("child")
    parent = {c["bom-ref"]: c for c in child["components"]}[f"image:{family.ref('deb')}"]  # type: ignore[attr-defined]
    deb_info = engine.inspect_image(family.ref("deb"))
    assert deb_info is not None
    assert parent["hashes"] == [{"alg": "SHA-256", "content": deb_info.id.removeprefix("sha256:")}]

    tiny = family.sbom("tiny")
    root = tiny["metadata"]["component"]  # type: ignore[index]
    said = {p["name"]: p["value"] for p in root["properties"]}
    assert said["lowbuild:packages"].startswith("no package manager")
    assert not [c for c in tiny["components"] if c["type"] == "library"]  # type: ignore[attr-defined]
    bare = family.sbom("bare")["metadata"]["component"]  # type: ignore[index]
    said = {p["name"]: p["value"] for p in bare["properties"]}
    assert said["lowbuild:packages"].startswith("the image has no /bin/sh")
    assert family.label("bare").startswith("sha256:")

    provenance = json.loads(
        (family.root / ".lowbuild" / "provenance" / "deb.intoto.json").read_text()
    )
    assert provenance["subject"][0] == {
        "name": family.ref("deb"),
        "digest": {"sha256": deb_info.id.removeprefix("sha256:")},
    }
    definition = provenance["predicate"]["buildDefinition"]
    assert definition["internalParameters"]["engine"] == engine.name
    assert {"name": TOOL, "digest": {"sha256": family.tool_sha}, "uri": family.tool_url} in (
        definition["resolvedDependencies"]
    )


def test_a_no_op_build_leaves_sboms_and_images_alone_and_sbom_checks_the_label(
    sbom_family: SbomFamily,
) -> None:
    family = sbom_family
    assert family.lowbuild("build").returncode == 0
    files = {n: family.sbom_file(n) for n in ("deb", "child", "tiny")}
    before = {n: (f.stat().st_mtime_ns, family.label(n)) for n, f in files.items()}
    again = family.lowbuild("build", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {r["state"] for r in json.loads(again.stdout)} == {"up-to-date"}
    assert {n: (f.stat().st_mtime_ns, family.label(n)) for n, f in files.items()} == before

    shown = family.lowbuild("sbom", "deb")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.encode() == files["deb"].read_bytes()
    assert "is the SBOM" in shown.stderr
    # a changed SBOM file is not the one the image names: refused
    files["deb"].write_text(files["deb"].read_text().replace("base-files", "base-filez"))
    refused = family.lowbuild("sbom", "deb")
    assert refused.returncode == 4 and "not this image's SBOM" in refused.stderr

    # a changed input rebuilds that image alone, with a new SBOM
    (family.root / "contexts" / "tiny" / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo tiny2 > /etc/tiny\n"
    )
    rebuilt = family.lowbuild("build", "--json")
    states = {r["image"]: r["state"] for r in json.loads(rebuilt.stdout)}
    assert states == {
        "deb": "up-to-date",
        "child": "up-to-date",
        "tiny": "built",
        "bare": "up-to-date",
    }
    assert family.label("tiny") != before["tiny"][1]
    assert files["tiny"].stat().st_mtime_ns != before["tiny"][0]

    # an image left as a run cut short between its build and its SBOM step leaves it
    # (its label still "pending") is built again, and gets its SBOM
    step = family.root.parent / "cut-short"
    step.mkdir()
    (step / "Dockerfile").write_text(f"FROM {family.ref('tiny')}\nLABEL lowbuild.sbom=pending\n")
    family.engine.build(
        BuildRequest(
            context=step, dockerfile=step / "Dockerfile", tags=[family.ref("tiny")], network="none"
        )
    )
    files["tiny"].unlink()
    plan = family.lowbuild("plan", "tiny", "--no-deps")
    assert "its SBOM was never written" in plan.stdout + plan.stderr
    healed = family.lowbuild("build", "tiny", "--no-deps", "--json")
    assert [r["state"] for r in json.loads(healed.stdout)] == ["built"]
    assert (
        family.label("tiny") == "sha256:" + hashlib.sha256(files["tiny"].read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("engine", ["podman"], indirect=True)
def test_push_output_and_bundles_carry_the_sbom(
    sbom_family: SbomFamily, registry: Registry, tmp_path: Path
) -> None:
    family = sbom_family
    assert family.lowbuild("build").returncode == 0
    prefix = f"{registry.host}/{family.namespace}"
    pushed = family.lowbuild("push", "deb", "--to", prefix, "--no-tls-verify", "--json")
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    records = {r["image"]: r for r in conforming("push", pushed.stdout)}
    assert records["deb"]["sbom"] == family.label("deb")

    bundle = tmp_path / "deb.bundle"
    exported = family.lowbuild("bundle", "export", str(bundle), "deb", "--with-built", "deb")
    assert exported.returncode == 0, exported.stderr[-2000:]
    listed = family.lowbuild("bundle", "ls", str(bundle), "--json", engine=False)
    kinds = {(m["kind"], m["path"]) for m in json.loads(listed.stdout)}
    assert ("sbom", "sbom/deb.cyclonedx.json") in kinds
    assert ("provenance", "provenance/deb.intoto.json") in kinds

    # the other side: the same project without its state, importing the bundle
    other = tmp_path / "other"
    (other / "contexts").mkdir(parents=True)
    (other / "lowbuild.yaml").write_text((family.root / "lowbuild.yaml").read_text())
    imported = subprocess.run(
        [sys.executable, "-m", "lowbuild", "bundle", "import", str(bundle), "--engine", "podman"],
        cwd=other,
        env={**family.env, "LOWBUILD_CACHE": str(tmp_path / "other-cache")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    arrived = other / ".lowbuild" / "sbom" / "deb.cyclonedx.json"
    assert arrived.read_bytes() == family.sbom_file("deb").read_bytes()
    assert (other / ".lowbuild" / "provenance" / "deb.intoto.json").is_file()

    # a bundle whose SBOM is not the image's is not written
    family.sbom_file("deb").write_text("{}\n")
    refused = family.lowbuild(
        "bundle", "export", str(tmp_path / "bad.bundle"), "--with-built", "deb"
    )
    assert refused.returncode == 4 and "label says" in refused.stderr
    assert not (tmp_path / "bad.bundle").exists()


def test_a_rebuild_runs_its_unchanged_steps_from_the_layer_cache(
    sbom_family: SbomFamily,
) -> None:
    """The SBOM step relabels each image built and removes the unlabelled one: never with
    its untagged parents, which are podman's and docker's layer cache."""
    family = sbom_family
    if family.engine.name == "buildah":
        pytest.skip("buildah builds without --layers: it keeps no layer cache to lose")
    tiny = family.root / "contexts" / "tiny"
    (tiny / "extra.txt").write_text("one\n")
    (tiny / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo step > /etc/step\nCOPY extra.txt /extra.txt\n"
    )
    first = family.lowbuild("build", "tiny", "--no-deps")
    assert first.returncode == 0, first.stderr[-2000:]
    (tiny / "extra.txt").write_text("two\n")
    again = family.lowbuild("build", "tiny", "--no-deps", "--json")
    assert [r["state"] for r in json.loads(again.stdout)] == ["built"]
    log = (family.root / ".lowbuild/logs/latest/tiny.log").read_text()
    run_step = log[log.index("echo step") :]
    # podman: "--> Using cache", docker: " ---> Using cache", BuildKit: "CACHED"
    assert re.search(r"Using cache|CACHED", run_step[:400]), run_step[:400]
