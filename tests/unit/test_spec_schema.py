"""The JSON Schemas of lowbuild.yaml and image.yaml (`lowbuild schema`): they know the
loader's keys exactly, accept every spec of the seed family, and reject the bad specs
the loader rejects for what a schema can see (an unknown key, a wrong type or shape)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_smoke_test_limits import BAD_TIMEOUTS
from test_spec_load import BAD_IMAGE_YAML, BAD_PROJECT_YAML, BASE, NGINX, PROJECT, TOOLS
from test_spec_sizes import BAD_SIZES

from lowbuild.spec import load
from lowbuild.spec.schema import image_schema, project_schema

REPO = Path(__file__).resolve().parents[2]

# Every mapping the loader reads, by where it sits in the file: the loader's keys for it.
PROJECT_RECORDS = {
    (): "PROJECT_KEYS",
    ("mirrors",): "MIRROR_KEYS",
    ("bases",): "BASE_KEYS",
    ("bases", "platforms", "*"): "PLATFORM_BASE_KEYS",
    ("registries",): "REGISTRY_KEYS",
    ("cache",): "CACHE_KEYS",
}
IMAGE_RECORDS = {
    (): "IMAGE_KEYS",
    ("artifacts",): "ARTIFACT_KEYS",
    ("artifacts", "releases"): "RELEASES_KEYS",
    ("packs",): "PACK_KEYS",
    ("test",): "TEST_KEYS",
    ("test", "http"): "HTTP_TEST_KEYS",
    ("commit",): "COMMIT_KEYS",
    ("commit", "steps"): "COMMIT_STEP_KEYS",
}


def valid(schema: dict[str, Any], text: str) -> bool:
    validator = jsonschema.Draft202012Validator(schema)
    return validator.is_valid(yaml.safe_load(textwrap.dedent(text)))


def records(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Every record (object with named keys) of `schema`: where it sits (the keys that
    lead to it, a list's items standing where the list is) and its keys."""
    if "properties" in schema:
        yield path, list(schema["properties"])
        for key, value in schema["properties"].items():
            yield from records(value, (*path, key))
    if isinstance(schema.get("items"), dict):
        yield from records(schema["items"], path)
    if isinstance(schema.get("additionalProperties"), dict):  # a map's values: at "*"
        yield from records(schema["additionalProperties"], (*path, "*"))
    for choice in schema.get("oneOf", []):
        yield from records(choice, path)


def test_the_schemas_are_valid_json_schema() -> None:
    for schema in (project_schema(), image_schema()):
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    "schema, expected",
    [(project_schema(), PROJECT_RECORDS), (image_schema(), IMAGE_RECORDS)],
    ids=["lowbuild.yaml", "image.yaml"],
)
def test_every_record_of_the_schema_has_the_loaders_keys(
    schema: dict[str, Any], expected: dict[tuple[str, ...], str]
) -> None:
    found = dict(records(schema))
    assert sorted(found) == sorted(expected)  # no record of the schema is left unchecked
    for path, name in expected.items():
        assert sorted(found[path]) == sorted(getattr(load, name)), (path, name)


def test_every_key_set_of_the_loader_is_held_against_the_schema() -> None:
    """A new mapping in the loader gets its own `*_KEYS` constant, and a row above."""
    defined = {name for name in vars(load) if name.endswith("_KEYS")}
    assert defined == {*PROJECT_RECORDS.values(), *IMAGE_RECORDS.values()}


def test_every_spec_of_the_seed_family_is_valid() -> None:
    assert valid(project_schema(), (REPO / "lowbuild.yaml").read_text())
    images = sorted((REPO / "contexts").glob("*/image.yaml"))
    assert len(images) >= 7
    for image in images:
        assert valid(image_schema(), image.read_text()), image


def test_the_good_specs_of_the_loader_tests_are_valid() -> None:
    assert valid(project_schema(), PROJECT)
    for text in (BASE, NGINX, TOOLS):
        assert valid(image_schema(), text), text
    assert valid(project_schema(), "name: p\nmax-download: 4GiB\n")
    assert valid(project_schema(), "name: p\nregistries: [{name: r, prefix: localhost:5000/}]\n")


# The bad specs of the loader tests that a schema cannot see: the loader says why.
LOADER_ONLY_IMAGE = {
    "yaml_syntax": "not YAML at all: there is nothing for a schema to check",
    "artifact_outside_context": "a path inside the context",
    "artifact_absolute": "a path inside the context",
    "pack_into_outside": "a path inside the context",
    "pack_from_outside": "a path inside the context",
    "pack_from_missing": "a directory of the context",
    "missing_dockerfile_named": "a file of the context",
    "commit_copy_of_nothing": "a file of the context",
    "duplicate_key": "YAML keeps the last of two keys before a schema sees them",
    "commit_change_with_a_variable": "the Dockerfile syntax of a change",
    "commit_label_on_two_lines": "a label's value, for kind: commit only",
}
LOADER_ONLY_PROJECT = {
    "missing_context_dir": "a directory on disk",
    "context_without_image_yaml": "a file on disk",
    "glob_matches_nothing": "directories on disk",
}


@pytest.mark.parametrize("case", BAD_IMAGE_YAML)
def test_a_bad_image_yaml_the_schema_can_see_is_invalid(case: str) -> None:
    text, _line, _words = BAD_IMAGE_YAML[case]
    if case == "yaml_syntax":
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text)
    elif case in LOADER_ONLY_IMAGE:
        assert valid(image_schema(), text)  # (if the schema learns it, move the case)
    else:
        assert not valid(image_schema(), text)


@pytest.mark.parametrize("case", BAD_PROJECT_YAML)
def test_a_bad_lowbuild_yaml_the_schema_can_see_is_invalid(case: str) -> None:
    text, _line, _words = BAD_PROJECT_YAML[case]
    assert valid(project_schema(), text) == (case in LOADER_ONLY_PROJECT)


@pytest.mark.parametrize("value", BAD_SIZES)
def test_a_bad_size_is_invalid_in_both_places(value: str) -> None:
    assert not valid(project_schema(), f"name: p\nmax-download: {value}\n")
    artifact = f"name: a\nartifacts:\n- {{file: a, urls: [https://a/a], sha256: {'a' * 64}}}\n"
    assert valid(image_schema(), artifact)
    assert not valid(image_schema(), artifact.replace("}", f", size: {value}}}"))


@pytest.mark.parametrize("case", BAD_TIMEOUTS)
def test_a_timeout_that_is_no_time_limit_is_invalid(case: str) -> None:
    block, _line = BAD_TIMEOUTS[case]
    # JSON has no NaN: a schema's bounds cannot refuse one (the loader does).
    assert valid(image_schema(), "name: app\ntest:\n" + block) == (case == "nan")


def test_lowbuild_schema_prints_each(tmp_path: Path) -> None:
    for which, schema in (("project", project_schema()), ("image", image_schema())):
        done = subprocess.run(
            [sys.executable, "-m", "lowbuild", "schema", which],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(done.stdout) == schema
