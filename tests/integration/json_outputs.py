"""`--json` output held against its JSON Schema (`lowbuild schema NAME`): the integration
tests that print an engine command's JSON check it with `conforming` as they parse it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from lowbuild.run.output_schemas import output_schema


def conforming(name: str, stdout: str) -> Any:
    """The JSON document `stdout` holds, once it matches output schema `name` (or, for
    a run that failed, the error object's schema)."""
    document = json.loads(stdout)
    if isinstance(document, dict) and set(document) == {"error"} and name != "error":
        name = "error"
    jsonschema.Draft202012Validator(output_schema(name)).validate(document)
    return document
