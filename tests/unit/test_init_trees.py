"""`lowbuild init` on trees of hand-made image directories, of several shapes, run as a user
would (the real command, no engine asked: --no-pins), and the family it wrote checked with
lowbuild's own `graph --json` and `fetch --offline`. Nothing that existed may change.
(tests/integration/test_init_build.py builds an imported family on podman.)"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import jsonschema
import pytest
from test_graph_cli import run_lowbuild

from lowbuild.run.output_schemas import output_schema

EXIT_BAD_INPUT = 2


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def tarball(path: Path, files: dict[str, bytes]) -> Path:
    """A real .tar.gz holding `files`, written straight from memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def tutorial_tree(root: Path) -> Path:
    """The tutorial's layout: nested categories, docker_build.sh and docker-build.sh."""
    write(
        root / "system/centos/Dockerfile",
        "FROM centos:7.6.1810\nMAINTAINER ops\nRUN useradd -u 2000 nginx\n",
    )
    write(root / "system/centos/docker_build.sh", "#!/bin/bash\ndocker build -t centos:base .\n")
    tarball(root / "web/nginx/nginx-1.17.1.tar.gz", {"nginx-1.17.1/README": b"nginx"})
    write(root / "web/nginx/index.html", "<h1>hi</h1>\n")
    with tarfile.open(root / "web/nginx/code.tar.gz", "w:gz") as tar:  # by hand, from beside it
        tar.add(root / "web/nginx/index.html", arcname="index.html")
    write(
        root / "web/nginx/Dockerfile",
        "FROM centos:base\nADD nginx-1.17.1.tar.gz /usr/local/src/\nADD code.tar.gz /srv/\n"
        'EXPOSE 80\nCMD ["nginx", "-g", "daemon off;"]\n',
    )
    write(root / "web/nginx/docker-build.sh", "TAG=v1\ndocker build -t nginx:${TAG} .\n")
    tarball(root / "web/jdk/jdk-8u202-linux-x64.tar.gz", {"jdk1.8.0_202/release": b"8"})
    write(
        root / "web/jdk/Dockerfile",
        "FROM centos:base\nADD jdk-8u202-linux-x64.tar.gz /usr/local/src/\n",
    )
    write(root / "web/jdk/docker_build.sh", "docker build -t jdk-base:v8.202 .\n")
    tarball(root / "web/tomcat/apache-tomcat-8.5.43.tar.gz", {"apache-tomcat-8.5.43/RELEASE": b"t"})
    write(root / "web/tomcat/run_tomcat.sh", "#!/bin/bash\ncatalina.sh start\ntail -f /etc/hosts\n")
    write(
        root / "web/tomcat/Dockerfile",
        "FROM jdk-base:v8.202\nADD apache-tomcat-8.5.43.tar.gz /apps/\n"
        'ADD run_tomcat.sh /apps/\nEXPOSE 8080\nCMD ["/apps/run_tomcat.sh"]\n',
    )
    write(
        root / "web/tomcat/docker_build.sh",
        "docker build -t tomcat-web:app1 .\ndocker push tomcat-web:app1\n",
    )
    write(
        root / "README.md",
        "wget https://archive.apache.org/dist/tomcat/tomcat-8/v8.5.43/bin/apache-tomcat-8.5.43.tar.gz\n",
    )
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        path.relative_to(root).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def init(root: Path, *args: str, cache: Path) -> tuple[int, str, str]:
    done = run_lowbuild("init", "--no-pins", *args, cwd=root, env={"LOWBUILD_CACHE": str(cache)})
    return done.returncode, done.stdout, done.stderr


def graph(root: Path) -> dict[str, dict[str, object]]:
    done = run_lowbuild("graph", "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    return {image["name"]: image for image in json.loads(done.stdout)["images"]}


def test_the_tutorials_tree_becomes_a_family_and_nothing_existing_changes(tmp_path: Path) -> None:
    root, cache = tutorial_tree(tmp_path / "dockerfile"), tmp_path / "cache"
    before = snapshot(root)

    code, out, err = init(root, "--json", cache=cache)

    assert code == 0, err
    report = json.loads(out)
    jsonschema.Draft202012Validator(output_schema("init")).validate(report)
    after = snapshot(root)
    written = {
        "lowbuild.yaml",
        *(f"{d}/image.yaml" for d in ("system/centos", "web/nginx", "web/jdk", "web/tomcat")),
    }
    assert set(after) - set(before) == written
    assert {k: v for k, v in after.items() if k in before} == before  # not one byte, not one mtime

    family = graph(root)
    assert set(family) == {"centos", "nginx", "jdk-base", "tomcat-web"}
    assert family["nginx"]["parent"] == "centos" and family["jdk-base"]["parent"] == "centos"
    assert family["tomcat-web"]["parent"] == "jdk-base"
    assert family["centos"]["external"] == ["centos:7.6.1810"]

    # Every tarball is pinned by its digest and in the cache: an offline fetch finds all.
    offline = run_lowbuild("fetch", "--offline", cwd=root, env={"LOWBUILD_CACHE": str(cache)})
    assert offline.returncode == 0, offline.stderr
    tomcat = next(i for i in report["images"] if i["name"] == "tomcat-web")
    [artifact] = tomcat["artifacts"]
    tarball_bytes = (root / "web/tomcat/apache-tomcat-8.5.43.tar.gz").read_bytes()
    assert artifact["sha256"] == hashlib.sha256(tarball_bytes).hexdigest()
    assert artifact["urls"] == [
        "https://archive.apache.org/dist/tomcat/tomcat-8/v8.5.43/bin/apache-tomcat-8.5.43.tar.gz"
    ]
    assert (cache / "sha256" / artifact["sha256"]).is_file() or any(cache.rglob(artifact["sha256"]))

    kinds = {(f["kind"], f["file"]) for f in report["findings"]}
    assert ("maintainer", "system/centos/Dockerfile") in kinds
    assert ("tail-f", "web/tomcat/run_tomcat.sh") in kinds
    assert ("hand-made-archive", "web/nginx/Dockerfile") in kinds
    assert ("script-command", "web/tomcat/docker_build.sh") in kinds
    assert ("cache-only", "web/jdk/Dockerfile") in kinds
    # code.tar.gz was made by hand: a context file with a suggested pack, not an artifact.
    nginx = next(i for i in report["images"] if i["name"] == "nginx")
    assert [a["file"] for a in nginx["artifacts"]] == ["nginx-1.17.1.tar.gz"]
    assert nginx["test_port"] == 80
    assert "# test: {http: {port: 80" in (root / "web/nginx/image.yaml").read_text()


def test_a_second_init_changes_nothing(tmp_path: Path) -> None:
    root, cache = tutorial_tree(tmp_path / "tree"), tmp_path / "cache"
    assert init(root, cache=cache)[0] == 0
    before = snapshot(root)
    code, out, err = init(root, cache=cache)
    assert code == 0, err
    assert snapshot(root) == before
    assert "unchanged lowbuild.yaml" in out


def test_an_edited_spec_is_not_overwritten_without_force(tmp_path: Path) -> None:
    root, cache = tutorial_tree(tmp_path / "tree"), tmp_path / "cache"
    assert init(root, cache=cache)[0] == 0
    edited = root / "web/jdk/image.yaml"
    edited.write_text(edited.read_text() + "# mine\n")
    before = snapshot(root)
    code, _, err = init(root, "--tests", cache=cache)  # would write tests into nginx and tomcat
    assert code == EXIT_BAD_INPUT and "web/jdk/image.yaml" in err and "--force" in err
    assert snapshot(root) == before  # nothing at all written, not even the other files
    code, _, err = init(root, "--tests", "--force", cache=cache)
    assert code == 0, err
    assert "# mine" not in edited.read_text()
    assert "\ntest: {http: {port: 80" in (root / "web/nginx/image.yaml").read_text()


def test_dry_run_prints_the_files_and_writes_none(tmp_path: Path) -> None:
    root = tutorial_tree(tmp_path / "tree")
    before = snapshot(root)
    code, out, err = init(root, "--dry-run", cache=tmp_path / "cache")
    assert code == 0, err
    assert "would write web/tomcat/image.yaml" in out and 'parent: "jdk-base"' in out
    assert snapshot(root) == before and not (tmp_path / "cache").exists()


def test_multi_stage_arg_from_collisions_and_a_from_nobody_builds(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root / "base/Dockerfile", "FROM debian:12\n")
    write(root / "base/build.sh", "docker build -t corp/base:1 -t corp/base:latest .\n")
    # Multi-stage: the final stage stands on the family's base; the builder stage is external.
    write(
        root / "apps/api/Dockerfile",
        "FROM golang:1.22 AS build\nRUN go build\nFROM corp/base:1\nCOPY --from=build /app /app\n",
    )
    write(root / "apps/api/docker_build.sh", "docker build -t corp/api:2 .\n")
    # ARG-based FROM, resolved with its default.
    write(root / "apps/web/Dockerfile", "ARG BASE=corp/base:latest\nFROM ${BASE}\n")
    write(root / "apps/web/docker_build.sh", "docker build -t web:3 .\n")
    # Two directories tag the same name with different tags.
    write(root / "tools/a/Dockerfile", "FROM corp/base:1\n")
    write(root / "tools/a/docker_build.sh", "docker build -t tool:alpha .\n")
    write(root / "tools/b/Dockerfile", "FROM tool:alpha\n")
    write(root / "tools/b/docker_build.sh", "docker build -t tool:beta .\n")
    # A tag no engine accepts is left out, with a finding.
    write(root / "apps/bad/Dockerfile", "FROM corp/base:1\n")
    write(root / "apps/bad/docker_build.sh", "docker build -t BadName:1 -t bad:2 .\n")
    # No build script at all: named after its directory.
    write(root / "misc/Odd Name/Dockerfile", "FROM alpine:3.19\n")

    code, out, err = init(root, "--json", cache=tmp_path / "cache")

    assert code == 0, err
    family = graph(root)
    assert set(family) == {"base", "api", "web", "bad", "tool-alpha", "tool-beta", "odd-name"}
    assert family["bad"]["refs"] == ["lowbuild/bad:latest", "lowbuild/bad:2", "bad:2"]
    assert family["api"]["parent"] == "base" and family["api"]["external"] == ["golang:1.22"]
    assert family["web"]["parent"] == "base"
    assert family["tool-beta"]["parent"] == "tool-alpha"
    assert family["base"]["external"] == ["debian:12"]
    kinds = [f["kind"] for f in json.loads(out)["findings"]]
    assert kinds.count("name-collision") == 2 and "named-after-directory" in kinds
    assert "bad-tag" in kinds


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"empty/README": "nothing here\n"}, "no Dockerfile in"),
        ({"a/Dockerfile": "FROM x\nBOGUS y\n"}, "Dockerfile:2"),
        (
            {
                "a/Dockerfile": "FROM b:1\n",
                "a/build.sh": "docker build -t a:1 .\n",
                "b/Dockerfile": "FROM a:1\n",
                "b/build.sh": "docker build -t b:1 .\n",
            },
            "circle",
        ),
        ({"a/Dockerfile": "FROM x\n", "a/docker_build.sh": b"\xff\xfe"}, "docker_build.sh"),
    ],
    ids=["no-dockerfile", "bad-dockerfile", "cycle", "unreadable-script"],
)
def test_bad_trees_are_exit_2_with_the_place_and_nothing_written(
    tmp_path: Path, files: dict[str, str | bytes], message: str
) -> None:
    root = tmp_path / "tree"
    for name, text in files.items():
        write(root / name, text)
    before = snapshot(root)
    code, _, err = init(root, cache=tmp_path / "cache")
    assert code == EXIT_BAD_INPUT, err
    assert message in err
    assert snapshot(root) == before


def test_init_reads_but_never_runs_the_scripts(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    marker = tmp_path / "ran"
    write(root / "a/Dockerfile", "FROM x:1\n")
    write(root / "a/docker_build.sh", f"touch {marker}\ndocker build -t a:1 .\n")
    os.chmod(root / "a/docker_build.sh", 0o755)
    code, _, err = init(root, cache=tmp_path / "cache")
    assert code == 0, err
    assert not marker.exists()


def test_a_spec_lowbuild_refuses_is_taken_back_whole(tmp_path: Path) -> None:
    # The tree reader follows the link; lowbuild's loader refuses a Dockerfile outside its
    # context. init must then leave no file of its own behind.
    outside = write(tmp_path / "elsewhere/Dockerfile", "FROM x:1\n")
    root = tmp_path / "tree"
    write(root / "good/Dockerfile", "FROM x:1\n")
    (root / "linked").mkdir(parents=True)
    (root / "linked/Dockerfile").symlink_to(outside)
    before = snapshot(root)
    code, _, err = init(root, cache=tmp_path / "cache")
    assert code == EXIT_BAD_INPUT and "outside the context" in err
    assert snapshot(root) == before
    assert not list(root.rglob(".*lowbuild-init*"))


def test_sources_are_read_as_the_engines_read_them(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root / "app/tool.bin", os.urandom(1_200_000))  # a big binary: an input
    write(root / "app/app.conf", "x = 1\n")  # a small config: a context file
    tarball(root / "app/lib-1.0.tar.gz", {"lib/README": b"lib"})
    write(
        root / "app/Dockerfile",
        "FROM x:1\nCOPY /tool.bin /usr/bin/\nCOPY --chown=1:1 app.conf /etc/\n"
        "ADD lib-*.tar.gz /opt/\nCOPY --from=builder:1 /out /out\n",
    )
    code, out, err = init(root, "--json", cache=tmp_path / "cache")
    assert code == 0, err
    [image] = json.loads(out)["images"]
    assert sorted(a["file"] for a in image["artifacts"]) == ["lib-1.0.tar.gz", "tool.bin"]


def test_a_cache_only_input_missing_from_the_cache_is_said_plainly(tmp_path: Path) -> None:
    root = tutorial_tree(tmp_path / "tree")
    tarball(root / "web/jdk/jdk-8u191-linux-x64.tar.gz", {"old/release": b"7"})  # left over
    code, out, err = init(root, "--json", cache=tmp_path / "cache")
    assert code == 0, err
    unused = [f for f in json.loads(out)["findings"] if f["kind"] == "unused-input"]
    assert [f["file"] for f in unused] == ["web/jdk/jdk-8u191-linux-x64.tar.gz"]

    # Another host, another (empty) cache: fetch cannot download a cache-only input.
    elsewhere = {"LOWBUILD_CACHE": str(tmp_path / "other-cache")}
    fetched = run_lowbuild("fetch", "jdk-base", cwd=root, env=elsewhere)
    assert fetched.returncode != 0
    assert "cache-only (no urls: declared)" in fetched.stderr
    assert "lowbuild cache add jdk-8u202-linux-x64.tar.gz" in fetched.stderr


def test_the_seed_familys_own_dockerfiles_come_back_as_the_same_family(tmp_path: Path) -> None:
    """A tree written for lowbuild already (FROM lowbuild/base:latest, no build scripts),
    which init was not tuned for: the repository's own contexts, their image.yaml gone."""
    repo = Path(__file__).resolve().parents[2]
    root = tmp_path / "seed"
    shutil.copytree(repo / "contexts", root / "contexts", symlinks=True)
    for spec in root.rglob("image.yaml"):
        spec.unlink()
    code, out, err = init(root, "--json", cache=tmp_path / "cache")
    assert code == 0, err
    family = graph(root)
    assert family["base"]["parent"] is None
    assert family["base"]["external"] == ["localhost/lowbuild/bookworm:latest"]
    assert {name: family[name]["parent"] for name in ("haproxy", "jdk", "nginx", "nginx-pkg")} == {
        "haproxy": "base",
        "jdk": "base",
        "nginx": "base",
        "nginx-pkg": "base",
    }
    assert family["tomcat"]["parent"] == "jdk"
    findings = json.loads(out)["findings"]
    missing = {
        (f["file"], f["message"].split()[0]) for f in findings if f["kind"] == "missing-source"
    }
    assert ("contexts/tomcat/Dockerfile", "app.tar.gz") in missing  # a pack lowbuild makes
    # run_tomcat.sh names `tail -f` only in a comment: no finding.
    assert not [f for f in findings if f["kind"] == "tail-f"]


def test_odd_file_names_and_a_file_added_twice(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    odd = root / "web apps" / "ñginx"
    tarball(odd / "my file (1).tar.gz", {"x": b"x"})
    write(
        odd / "Dockerfile",
        'FROM alpine:3\nADD ["my file (1).tar.gz", "/srv/"]\nCOPY *.tar.gz /x/\n',
    )
    code, out, err = init(root, "--json", cache=tmp_path / "cache")
    assert code == 0, err
    [image] = json.loads(out)["images"]
    assert [a["file"] for a in image["artifacts"]] == ["my file (1).tar.gz"]  # once
    assert image["directory"] == "web apps/ñginx"
    offline = run_lowbuild(
        "fetch", "--offline", cwd=root, env={"LOWBUILD_CACHE": str(tmp_path / "cache")}
    )
    assert offline.returncode == 0, offline.stderr
