"""Fingerprints: every input counts, nothing else does; the why-diff names what changed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from lowbuild.plan.fingerprint import (
    FINGERPRINT_LABEL,
    INPUTS_LABEL,
    MAX_RECORDED_FILES,
    SBOM_LABEL,
    SBOM_PENDING,
    BuildInputs,
    fingerprint,
    fingerprint_labels,
    inputs_for,
    rebuild_reasons,
)
from lowbuild.plan.graph import FamilyGraph, build_graph
from lowbuild.spec.load import load_project

BOOKWORM = "localhost/lowbuild/bookworm:latest"
BASE_ID = "sha256:" + "1" * 64
BOOKWORM_ID = "sha256:" + "2" * 64


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


FILES = {
    "Dockerfile": digest("FROM"),
    "nginx.conf": digest("conf"),
    "site/index.html": digest("hi"),
}


@pytest.fixture
def family(tmp_path: Path) -> FamilyGraph:
    (tmp_path / "lowbuild.yaml").write_text("name: seed\n")
    base = tmp_path / "contexts" / "base"
    base.mkdir(parents=True)
    (base / "image.yaml").write_text("name: base\n")
    (base / "Dockerfile").write_text(f"FROM {BOOKWORM}\n")
    nginx = tmp_path / "contexts" / "nginx"
    nginx.mkdir(parents=True)
    (nginx / "image.yaml").write_text(
        "name: nginx\nparent: base\nargs: {NGINX_VERSION: '1.22.1'}\nlabels: {team: web}\n"
    )
    (nginx / "Dockerfile").write_text("FROM lowbuild/base:latest\nARG NGINX_VERSION\n")
    tools = tmp_path / "contexts" / "tools"
    tools.mkdir(parents=True)
    (tools / "image.yaml").write_text(
        "name: tools\nkind: commit\ncommit:\n"
        "  base: base\n  steps: [{run: 'apt-get install -y curl'}]\n"
    )
    return build_graph(load_project(tmp_path / "lowbuild.yaml"))


def nginx_inputs(graph: FamilyGraph, **changes: object) -> BuildInputs:
    arguments: dict[str, object] = {
        "engine": "podman",
        "context_digest": "sha256:" + digest("context"),
        "context_files": FILES,
        "family_ids": {"base": BASE_ID},
        "external_ids": {},
    }
    arguments.update(changes)
    return inputs_for(graph.nodes["nginx"], **arguments)  # type: ignore[arg-type]


def test_same_inputs_same_fingerprint(family: FamilyGraph) -> None:
    first = fingerprint(nginx_inputs(family))
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert fingerprint(nginx_inputs(family)) == first


CHANGES = {
    "context": {"context": "sha256:" + digest("other context")},
    "dockerfile": {"recipe": digest("FROM lowbuild/base:latest\nRUN true\n")},
    "build_arg": {"args": (("NGINX_VERSION", "1.24.0"),)},
    "label": {"labels": (("team", "ops"),)},
    "build_option": {"options": (("network", "host"),)},
    "parent_id": {"family": (("base", "sha256:" + "9" * 64),)},
    "external_base_id": {"external": ((BOOKWORM, BOOKWORM_ID),)},
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_input_changes_the_fingerprint(
    family: FamilyGraph, change: dict[str, object]
) -> None:
    inputs = nginx_inputs(family)
    assert fingerprint(dataclasses.replace(inputs, **change)) != fingerprint(inputs)  # type: ignore[arg-type]


def test_editing_the_dockerfile_or_image_yaml_changes_the_fingerprint(family: FamilyGraph) -> None:
    before = fingerprint(nginx_inputs(family))
    nginx = family.nodes["nginx"].spec
    nginx.dockerfile_path.write_text("FROM lowbuild/base:latest\nARG NGINX_VERSION\nRUN true\n")
    assert fingerprint(nginx_inputs(family)) != before

    reloaded = build_graph(load_project(family.project.root / "lowbuild.yaml"))
    (nginx.directory / "image.yaml").write_text(
        "name: nginx\nparent: base\nargs: {NGINX_VERSION: '1.24.0'}\nlabels: {team: web}\n"
    )
    changed = build_graph(load_project(family.project.root / "lowbuild.yaml"))
    assert fingerprint(nginx_inputs(changed)) != fingerprint(nginx_inputs(reloaded))


def test_commit_recipe_steps_change_the_fingerprint(family: FamilyGraph) -> None:
    def tools_fingerprint(graph: FamilyGraph) -> str:
        return fingerprint(
            inputs_for(
                graph.nodes["tools"],
                engine="buildah",
                context_digest="sha256:" + digest(""),
                context_files={},
                family_ids={"base": BASE_ID},
                external_ids={},
            )
        )

    before = tools_fingerprint(family)
    image_yaml = family.nodes["tools"].spec.directory / "image.yaml"
    image_yaml.write_text(image_yaml.read_text().replace("curl", "wget"))
    after = tools_fingerprint(build_graph(load_project(family.project.root / "lowbuild.yaml")))
    assert after != before


def test_a_changed_commit_recipe_names_the_part_that_changed(family: FamilyGraph) -> None:
    def tools_inputs(graph: FamilyGraph) -> BuildInputs:
        return inputs_for(
            graph.nodes["tools"],
            engine="podman",
            context_digest="sha256:" + digest(""),
            context_files={},
            family_ids={"base": BASE_ID},
            external_ids={},
        )

    labels = fingerprint_labels(tools_inputs(family))
    image_yaml = family.nodes["tools"].spec.directory / "image.yaml"
    image_yaml.write_text(image_yaml.read_text() + "  changes: ['ENV A=1']\n")
    changed = tools_inputs(build_graph(load_project(family.project.root / "lowbuild.yaml")))
    assert rebuild_reasons(labels, changed) == ("commit recipe changed: changes",)
    # A record written before parts were recorded still gives the general reason.
    record = json.loads(labels[INPUTS_LABEL])
    del record["recipe_parts"]
    older = {**labels, INPUTS_LABEL: json.dumps(record)}
    assert rebuild_reasons(older, changed) == ("commit recipe changed",)


def test_missing_image_id_is_refused(family: FamilyGraph) -> None:
    with pytest.raises(ValueError, match="nginx: no image ID given for base"):
        nginx_inputs(family, family_ids={})


def labels_of(inputs: BuildInputs) -> dict[str, str]:
    return fingerprint_labels(inputs)


def test_no_image_means_new_image(family: FamilyGraph) -> None:
    assert rebuild_reasons(None, nginx_inputs(family)) == ("new image",)


def test_same_inputs_mean_up_to_date(family: FamilyGraph) -> None:
    built = labels_of(nginx_inputs(family))
    assert rebuild_reasons(built, nginx_inputs(family)) == ()


def test_changed_context_file_is_named(family: FamilyGraph) -> None:
    built = labels_of(nginx_inputs(family))
    files = dict(FILES, **{"nginx.conf": digest("conf v2"), "extra.txt": digest("x")})
    del files["site/index.html"]
    now = nginx_inputs(family, context_digest="sha256:" + digest("context v2"), context_files=files)
    assert rebuild_reasons(built, now) == (
        "context changed: files extra.txt (added), nginx.conf, site/index.html (removed)",
    )


def test_changed_dockerfile_is_told_once(family: FamilyGraph) -> None:
    built = labels_of(nginx_inputs(family))
    dockerfile = family.nodes["nginx"].spec.dockerfile_path
    dockerfile.write_text("FROM lowbuild/base:latest\nRUN true\n")
    now = nginx_inputs(
        family,
        context_digest="sha256:" + digest("context v2"),
        context_files=dict(FILES, Dockerfile=digest("FROM v2")),
    )
    assert rebuild_reasons(built, now) == ("Dockerfile changed",)


def test_each_kind_of_change_gives_its_reason(family: FamilyGraph) -> None:
    inputs = nginx_inputs(family)
    built = labels_of(inputs)
    expectations = {
        "build args changed: NGINX_VERSION": {"args": (("NGINX_VERSION", "1.24.0"),)},
        "labels changed: team": {"labels": (("team", "ops"),)},
        "build options changed: network": {"options": (("network", "host"),)},
        "parent rebuilt (base)": {"family": (("base", "sha256:" + "9" * 64),)},
    }
    for reason, change in expectations.items():
        now = dataclasses.replace(inputs, **change)  # type: ignore[arg-type]
        assert rebuild_reasons(built, now) == (reason,)


def test_another_engine_gives_the_same_fingerprint(family: FamilyGraph) -> None:
    """Every engine writes the same image format from the same inputs: what podman built
    is up to date for buildah on the same storage, and a registry cache entry pushed by
    one engine is found by another."""
    inputs = nginx_inputs(family)
    on_docker = dataclasses.replace(inputs, engine="docker")
    assert fingerprint(on_docker) == fingerprint(inputs)
    assert rebuild_reasons(labels_of(inputs), on_docker) == ()
    assert json.loads(labels_of(on_docker)[INPUTS_LABEL])["engine"] == "docker"  # recorded


def test_external_base_change_is_named(family: FamilyGraph) -> None:
    node = family.nodes["base"]
    old = inputs_for(
        node,
        engine="podman",
        context_digest="sha256:" + digest("c"),
        context_files={},
        family_ids={},
        external_ids={BOOKWORM: BOOKWORM_ID},
    )
    new = dataclasses.replace(old, external=((BOOKWORM, "sha256:" + "3" * 64),))
    assert rebuild_reasons(fingerprint_labels(old), new) == (f"base image changed: {BOOKWORM}",)


def test_large_context_records_no_file_list_but_still_says_context_changed(
    family: FamilyGraph,
) -> None:
    many = {f"src/file{index:04}.c": digest(str(index)) for index in range(MAX_RECORDED_FILES + 1)}
    inputs = nginx_inputs(family, context_files=many)
    built = labels_of(inputs)
    assert "files" not in json.loads(built[INPUTS_LABEL])
    now = dataclasses.replace(inputs, context="sha256:" + digest("v2"))
    assert rebuild_reasons(built, now) == ("context changed",)


def test_inputs_label_stays_small(family: FamilyGraph) -> None:
    files = {
        f"src/some/deeper/dir/file{index:04}.c": digest(str(index))
        for index in range(MAX_RECORDED_FILES)
    }
    label = labels_of(nginx_inputs(family, context_files=files))[INPUTS_LABEL]
    assert len(label) < 8 * 1024
    assert "1.22.1" not in label  # build arg values are recorded only as digests


def test_image_not_built_by_lowbuild(family: FamilyGraph) -> None:
    reasons = rebuild_reasons({"maintainer": "someone"}, nginx_inputs(family))
    assert reasons == ("existing image has no lowbuild.fingerprint label (not built by lowbuild)",)


def test_unreadable_inputs_label_still_rebuilds(family: FamilyGraph) -> None:
    labels = {FINGERPRINT_LABEL: "sha256:" + "0" * 64, INPUTS_LABEL: "{not json"}
    assert rebuild_reasons(labels, nginx_inputs(family)) == (
        "fingerprint changed (no readable record of the previous inputs)",
    )


def test_an_image_whose_sbom_step_never_ran_is_built_again(family: FamilyGraph) -> None:
    inputs = nginx_inputs(family)
    labels = labels_of(inputs)
    assert rebuild_reasons({**labels, SBOM_LABEL: "sha256:" + "0" * 64}, inputs) == ()
    assert rebuild_reasons({**labels, SBOM_LABEL: ""}, inputs) == ()  # built with --no-sbom
    assert rebuild_reasons(labels, inputs) == ()  # built before SBOMs
    assert rebuild_reasons({**labels, SBOM_LABEL: SBOM_PENDING}, inputs) == (
        "its SBOM was never written (the run that built it was cut short)",
    )
