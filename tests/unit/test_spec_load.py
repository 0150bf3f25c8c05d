"""lowbuild.yaml / image.yaml loading: a valid family loads; every mistake names FILE:LINE."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from lowbuild.errors import SpecError
from lowbuild.spec.load import load_project
from lowbuild.spec.model import CommandTest, HttpTest

SHA_A = "a" * 64
SHA_B = "b" * 64
IMAGE_ID = "sha256:" + "c" * 64

PROJECT = f"""
name: seed
namespace: lowbuild
tag: latest
engine: podman
contexts: ["contexts/*"]
mirrors:
  - {{prefix: "https://example.org/download/", replacement: "file:///srv/mirror/"}}
bases:
  - {{ref: "localhost/lowbuild/bookworm:latest", id: "{IMAGE_ID}"}}
"""

BASE = """
name: base
tags: ["12"]
"""

NGINX = f"""
name: nginx
parent: base
tags: ["1.22.1", 1.10]
args: {{NGINX_VERSION: "1.22.1", JOBS: 2, RATIO: 1.10}}
labels: {{org.example.team: web}}
network: none
artifacts:
  - file: nginx-1.22.1.tar.gz
    urls: [https://example.org/download/nginx-1.22.1.tar.gz]
    sha256: {SHA_A}
packs:
  - {{into: code.tar.gz, from: site/}}
test:
  http: {{port: 80, path: /, status: 200, expect: "welcome", timeout: 30}}
"""

TOOLS = """
name: tools
kind: commit
test:
  command: "id nginx"
  expect: "uid="
commit:
  base: base
  author: "Jane <jane@example.org>"
  message: "tools by hand"
  steps:
    - {run: "apt-get install -y curl"}
    - {copy: motd, dest: /etc/motd}
  changes: ['CMD ["sh"]', "EXPOSE 80"]
"""


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    write_files(
        tmp_path,
        {
            "lowbuild.yaml": PROJECT,
            "contexts/base/image.yaml": BASE,
            "contexts/base/Dockerfile": "FROM localhost/lowbuild/bookworm:latest\n",
            "contexts/nginx/image.yaml": NGINX,
            "contexts/nginx/Dockerfile": "FROM lowbuild/base:latest\n",
            "contexts/nginx/site/index.html": "welcome\n",
            "contexts/tools/image.yaml": TOOLS,
            "contexts/tools/motd": "hello\n",
        },
    )
    return tmp_path


def spec_error(project_dir: Path) -> str:
    with pytest.raises(SpecError) as caught:
        load_project(project_dir / "lowbuild.yaml")
    return str(caught.value)


def test_valid_family_loads_every_section(project_dir: Path) -> None:
    project = load_project(project_dir / "lowbuild.yaml")

    assert project.name == "seed"
    assert project.root == project_dir
    assert project.engine == "podman"
    assert [image.name for image in project.images] == ["base", "nginx", "tools"]
    assert project.rewrites[0].replacement == "file:///srv/mirror/"
    assert project.bases[0].id == IMAGE_ID

    nginx = project.image("nginx")
    assert nginx.directory == project_dir / "contexts" / "nginx"
    assert nginx.directory.is_absolute()
    assert nginx.parent == "base"
    # numbers keep the spelling the user wrote: 1.10 is not 1.1
    assert nginx.tags == ("1.22.1", "1.10")
    assert dict(nginx.args) == {"NGINX_VERSION": "1.22.1", "JOBS": "2", "RATIO": "1.10"}
    assert nginx.network == "none"
    assert nginx.artifacts[0].sha256 == SHA_A
    assert nginx.packs[0].source == "site"
    assert nginx.packs[0].format == "tar.gz"
    assert nginx.test == HttpTest(port=80, path="/", status=200, expect="welcome", timeout=30.0)
    assert project.refs(nginx) == (
        "lowbuild/nginx:latest",
        "lowbuild/nginx:1.22.1",
        "lowbuild/nginx:1.10",
    )

    tools = project.image("tools")
    assert tools.kind == "commit"
    assert tools.commit is not None
    assert tools.commit.base == "base"
    assert tools.commit.steps[1].copy == "motd"
    assert tools.commit.changes == ('CMD ["sh"]', "EXPOSE 80")
    assert tools.test == CommandTest(command=("sh", "-c", "id nginx"), expect="uid=")


def test_project_file_defaults_to_current_directory(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project_dir)
    assert load_project().name == "seed"


def test_missing_project_file_says_how_to_point_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="pass -f FILE"):
        load_project()


# Each case: image.yaml of nginx replaced by `text`; the error must name nginx/image.yaml:LINE
# and say `words`.
BAD_IMAGE_YAML = {
    "yaml_syntax": ("name: nginx\nargs:\n  A: '1'\n B: 2\n", 4, ["YAML syntax error"]),
    "unknown_key_suggests_close_one": (
        "name: nginx\nparnet: base\n",
        2,
        ["unknown key 'parnet'", "did you mean 'parent'?", "valid keys: name, parent"],
    ),
    "wrong_type": ('name: nginx\nparent: base\ntags: "1.0"\n', 3, ["tags must be a list"]),
    "missing_required_name": ("parent: base\ntags: []\n", 1, ["missing required key 'name'"]),
    "bad_image_name": ("name: Nginx\n", 1, ["image name 'Nginx' is not valid"]),
    "uppercase_digest": (
        "name: nginx\nparent: base\nartifacts:\n  - file: a.tgz\n"
        f"    urls: [https://x.example/a.tgz]\n    sha256: {SHA_A.upper()}\n",
        6,
        ["sha256 must be 64 lowercase hex digits"],
    ),
    "short_sha512": (
        "name: nginx\nparent: base\nartifacts:\n  - file: a.tgz\n"
        f"    urls: [https://x.example/a.tgz]\n    sha256: {SHA_A}\n    sha512: abc\n",
        7,
        ["sha512 must be 128 lowercase hex digits"],
    ),
    "missing_digest": (
        "name: nginx\nparent: base\nartifacts:\n  - file: a.tgz\n    urls: [https://x.example/a.tgz]\n",
        4,
        ["'a.tgz' has no sha256", "lowbuild fetch --print-digests"],
    ),
    "artifact_outside_context": (
        "name: nginx\nparent: base\nartifacts:\n  - file: ../a.tgz\n"
        f"    urls: [https://x.example/a.tgz]\n    sha256: {SHA_A}\n",
        4,
        ["'../a.tgz' would land outside the build context"],
    ),
    "artifact_absolute": (
        "name: nginx\nparent: base\nartifacts:\n  - file: /etc/a.tgz\n"
        f"    urls: [https://x.example/a.tgz]\n    sha256: {SHA_A}\n",
        4,
        ["'/etc/a.tgz' would land outside the build context"],
    ),
    "artifact_url_scheme": (
        "name: nginx\nparent: base\nartifacts:\n  - file: a.tgz\n"
        f"    urls:\n      - ftp://x.example/a.tgz\n    sha256: {SHA_A}\n",
        6,
        ["must start with http://, https:// or file://"],
    ),
    "pack_into_outside": (
        "name: nginx\nparent: base\npacks:\n  - into: ../code.tar.gz\n    from: site\n",
        4,
        ["packs[0].into '../code.tar.gz' would land outside"],
    ),
    "pack_from_outside": (
        "name: nginx\nparent: base\npacks:\n  - into: code.tar.gz\n    from: ../../\n",
        5,
        ["packs[0].from '../../' would land outside"],
    ),
    "pack_from_missing": (
        "name: nginx\nparent: base\npacks:\n  - into: code.tar.gz\n    from: www/\n",
        5,
        ["pack 'code.tar.gz': directory", "www does not exist"],
    ),
    "port_out_of_range": (
        "name: nginx\nparent: base\ntest:\n  http:\n    port: 70000\n",
        5,
        ["test.http.port must be between 1 and 65535, not 70000"],
    ),
    "test_with_both_kinds": (
        "name: nginx\nparent: base\ntest:\n  http: {port: 80}\n  command: [id]\n",
        4,
        ["test needs exactly one of http: or command:"],
    ),
    "test_with_neither_kind": (
        "name: nginx\nparent: base\ntest:\n  expect: hi\n",
        4,
        ["test needs exactly one of http: or command:"],
    ),
    "commit_block_without_kind": (
        "name: nginx\nparent: base\ncommit:\n  base: base\n",
        4,
        ["commit: is only for kind: commit"],
    ),
    "kind_commit_without_block": (
        "name: nginx\nparent: base\nkind: commit\n",
        3,
        ["kind: commit needs a commit: block"],
    ),
    "unknown_kind": ("name: nginx\nkind: bake\n", 2, ["kind must be one of dockerfile, commit"]),
    "boolean_arg_value": (
        "name: nginx\nparent: base\nargs:\n  DEBUG: yes\n",
        4,
        ["args.DEBUG must be a string, not true/false", 'quote it: "yes"'],
    ),
    "reserved_label": (
        "name: nginx\nparent: base\nlabels:\n  lowbuild.fingerprint: x\n",
        4,
        ["labels starting with 'lowbuild.' are lowbuild's own"],
    ),
    "duplicate_key": ("name: nginx\nparent: base\nparent: base\n", 3, ["'parent' is given twice"]),
    "missing_dockerfile_named": (
        "name: nginx\nparent: base\ndockerfile: Containerfile\n",
        3,
        ["Containerfile, which does not exist"],
    ),
    "commit_copy_of_nothing": (
        "name: nginx\nkind: commit\ncommit:\n  base: base\n"
        "  steps:\n    - {copy: nope.conf, dest: /etc/}\n",
        6,
        ["'nope.conf' is neither in", "nor an artifact or pack"],
    ),
    "commit_change_with_a_variable": (
        "name: nginx\nkind: commit\ncommit:\n  base: base\n  changes:\n"
        "    - EXPOSE 80\n    - ENV PATH=/opt/bin:$PATH\n",
        7,
        ["commit change 'ENV PATH=/opt/bin:$PATH'", "write a literal $ as \\$"],
    ),
    "commit_label_on_two_lines": (
        'name: nginx\nkind: commit\ncommit:\n  base: base\nlabels:\n  about: "one\\ntwo"\n',
        6,
        ["label 'about': a commit recipe's label value must be one line"],
    ),
    "empty_file": ("", 1, ["image.yaml is empty"]),
}


@pytest.mark.parametrize("text, line, words", BAD_IMAGE_YAML.values(), ids=BAD_IMAGE_YAML.keys())
def test_bad_image_yaml_names_file_and_line(
    project_dir: Path, text: str, line: int, words: list[str]
) -> None:
    image_yaml = project_dir / "contexts" / "nginx" / "image.yaml"
    image_yaml.write_text(text)

    message = spec_error(project_dir)

    assert re.match(rf"{re.escape(str(image_yaml))}:{line}(:\d+)?: ", message), message
    for word in words:
        assert word in message


def test_missing_digest_allowed_when_asked_so_fetch_can_print_it(project_dir: Path) -> None:
    (project_dir / "contexts" / "nginx" / "image.yaml").write_text(
        "name: nginx\nparent: base\nartifacts:\n  - file: a.tgz\n    urls: [https://x.example/a.tgz]\n"
    )
    project = load_project(project_dir / "lowbuild.yaml", allow_missing_digests=True)
    assert project.image("nginx").artifacts[0].sha256 == ""


def test_missing_dockerfile_for_kind_dockerfile(project_dir: Path) -> None:
    (project_dir / "contexts" / "nginx" / "Dockerfile").unlink()
    message = spec_error(project_dir)
    assert message.startswith(f"{project_dir / 'contexts' / 'nginx' / 'image.yaml'}:1: ")
    assert "kind: dockerfile needs" in message
    assert "set `dockerfile:` if it has another name" in message


def test_duplicate_image_names_name_both_files(project_dir: Path) -> None:
    (project_dir / "contexts" / "tools" / "image.yaml").write_text(
        "# a copy\nname: nginx\nparent: base\n"
    )
    (project_dir / "contexts" / "tools" / "Dockerfile").write_text("FROM lowbuild/base\n")
    message = spec_error(project_dir)
    assert f"{project_dir / 'contexts' / 'nginx' / 'image.yaml'}:1" in message
    assert f"{project_dir / 'contexts' / 'tools' / 'image.yaml'}:2" in message
    assert "'nginx' is declared twice" in message


BAD_PROJECT_YAML = {
    "unknown_key": (
        "name: seed\nnamespaec: x\n",
        2,
        ["unknown key 'namespaec'", "did you mean 'namespace'?"],
    ),
    "missing_name": ("tag: latest\n", 1, ["missing required key 'name'"]),
    "unknown_engine": (
        "name: seed\nengine: rkt\n",
        2,
        ["engine must be one of podman, docker, buildx, buildah"],
    ),
    "bad_base_id": (
        "name: seed\nbases:\n  - ref: localhost/lowbuild/bookworm:latest\n    id: abc\n",
        4,
        ["bases[0].id must be an image ID"],
    ),
    "missing_context_dir": (
        "name: seed\ncontexts:\n  - contexts/base\n  - contexts/nope\n",
        4,
        ["contexts/nope does not exist"],
    ),
    "context_without_image_yaml": (
        "name: seed\ncontexts:\n  - contexts/base\n  - contexts/empty\n",
        4,
        ["contexts/empty has no image.yaml"],
    ),
    "glob_matches_nothing": (
        'name: seed\ncontexts: ["images/*"]\n',
        2,
        ["'images/*' matches no directory"],
    ),
    "mirror_missing_replacement": (
        "name: seed\nmirrors:\n  - prefix: https://example.org/\n",
        3,
        ["mirrors[0]: missing required key 'replacement'"],
    ),
}


@pytest.mark.parametrize(
    "text, line, words", BAD_PROJECT_YAML.values(), ids=BAD_PROJECT_YAML.keys()
)
def test_bad_project_yaml_names_file_and_line(
    project_dir: Path, text: str, line: int, words: list[str]
) -> None:
    if "contexts/empty" in text:  # elsewhere `contexts/*` would report it as well
        (project_dir / "contexts" / "empty").mkdir()
    (project_dir / "lowbuild.yaml").write_text(text)

    message = spec_error(project_dir)

    assert message.startswith(f"{project_dir / 'lowbuild.yaml'}:{line}: "), message
    for word in words:
        assert word in message


def test_glob_dir_without_image_yaml_is_named(project_dir: Path) -> None:
    (project_dir / "contexts" / "shared").mkdir()
    message = spec_error(project_dir)
    assert "shared (matched by 'contexts/*') has no image.yaml" in message


def test_explicit_context_list_keeps_its_order(project_dir: Path) -> None:
    (project_dir / "lowbuild.yaml").write_text(
        "name: seed\ncontexts: [contexts/tools, contexts/base, contexts/*]\n"
    )
    project = load_project(project_dir / "lowbuild.yaml")
    assert [image.name for image in project.images] == ["tools", "base", "nginx"]
