"""The JSON Schemas of lowbuild.yaml and image.yaml (`lowbuild schema`): they know the
loader's keys exactly, accept every spec of the seed family, and reject the bad specs
the loader rejects for what a schema can see (an unknown key, a wrong type or shape)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from test_spec_load import BAD_IMAGE_YAML

from lowbuild.spec import load
from lowbuild.spec.schema import image_schema, project_schema

REPO = Path(__file__).resolve().parents[2]


def valid(schema: dict[str, Any], text: str) -> bool:
    validator = jsonschema.Draft202012Validator(schema)
    return validator.is_valid(yaml.safe_load(text))


def test_the_schemas_are_valid_json_schema_with_the_loaders_keys() -> None:
    for schema, keys in (
        (project_schema(), load.PROJECT_KEYS),
        (image_schema(), load.IMAGE_KEYS),
    ):
        jsonschema.Draft202012Validator.check_schema(schema)
        assert sorted(schema["properties"]) == sorted(keys)


def test_every_spec_of_the_seed_family_is_valid() -> None:
    assert valid(project_schema(), (REPO / "lowbuild.yaml").read_text())
    images = sorted((REPO / "contexts").glob("*/image.yaml"))
    assert len(images) >= 7
    for image in images:
        assert valid(image_schema(), image.read_text()), image


@pytest.mark.parametrize(
    "case",
    [
        "unknown_key_suggests_close_one",
        "wrong_type",
        "missing_required_name",
        "uppercase_digest",
        "short_sha512",
    ],
)
def test_bad_image_specs_the_schema_can_see_are_invalid(case: str) -> None:
    text, _line, _words = BAD_IMAGE_YAML[case]
    assert not valid(image_schema(), text)


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
