"""JSON Schemas of `lowbuild.yaml` and `image.yaml`, for editors (yaml-language-server
completes keys and flags mistakes as you type) and for scripts that write specs.

The loader (spec/load.py) stays the judge: it also checks what a schema cannot (a
parent that exists, a context path inside the context, a registry named by `cache:`).
The key sets, patterns and choices here are the loader's own constants (a test holds
every record's keys equal to the loader's), and the seed family and the bad-spec
fixtures are checked against both.
"""

from __future__ import annotations

import re
from typing import Any

from lowbuild.spec import load
from lowbuild.spec.model import ENGINE_NAMES, MAX_TEST_TIMEOUT_S
from lowbuild.spec.platforms import KNOWN_ARCHITECTURES, KNOWN_VARIANTS

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# A scalar the loader reads as text: YAML numbers keep their spelling (`1.10`).
_TEXT: dict[str, Any] = {"type": ["string", "number"]}


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {**_TEXT, "description": description, **extra}


def _record(
    properties: dict[str, Any],
    *,
    required: tuple[str, ...] = (),
    description: str = "",
    **rules: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        **rules,
    }
    if required:
        record["required"] = list(required)
    if description:
        record["description"] = description
    return record


def _list(item: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "array", "items": item, "description": description}


def _text_map(description: str, *, key_pattern: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": _TEXT,
        "propertyNames": {"pattern": key_pattern},
        "description": description,
    }


def _requiring(*keys: str) -> list[dict[str, Any]]:
    """One schema per key, each requiring it: under oneOf, exactly one of the keys."""
    return [{"required": [key]} for key in keys]


_SECONDS = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TEST_TIMEOUT_S}
_NAME = _text("Lowercase letters, digits, '.', '_', '-'.", pattern=load.NAME_PATTERN.pattern)
# A number of bytes above 0: 1048576, or with a binary unit: 512MiB, 4GiB.
_BYTES = {
    "oneOf": [
        {"type": "integer", "minimum": 1},
        {
            "type": "string",
            "pattern": load.BYTE_SIZE_PATTERN.pattern,
            "not": {"pattern": "^0+ ?(KiB|MiB|GiB|TiB)?$"},
        },
    ]
}
# urlsplit() reads the scheme without regard to case.
_URL = _text(
    "An http://, https:// or file:// URL.", pattern="^([Hh][Tt][Tt][Pp][Ss]?|[Ff][Ii][Ll][Ee]):"
)
# The loader drops a trailing '/' before it checks a registry prefix.
_REGISTRY_PREFIX = load.REGISTRY_PREFIX_PATTERN.pattern.removesuffix("$") + "/*$"
# Not lowbuild's own (lowbuild.*), and no spaces or '=' in a label key.
_LABEL_KEY = "^(?!" + re.escape(load.RESERVED_LABEL_PREFIX) + r")[^\s=]+$"
_VARIANTS = sorted({variant for known in KNOWN_VARIANTS.values() for variant in known})
_PLATFORM_PATTERN = f"^linux/({'|'.join(KNOWN_ARCHITECTURES)})(/({'|'.join(_VARIANTS)}))?$"
_PLATFORMS = {
    "type": "array",
    "items": {"type": "string", "pattern": _PLATFORM_PATTERN},
    "minItems": 1,
    "uniqueItems": True,
    "description": "Platforms to build for, e.g. [linux/amd64, linux/arm64].",
}


def project_schema() -> dict[str, Any]:
    """The schema of lowbuild.yaml."""
    return {
        "$schema": DIALECT,
        "title": "lowbuild project (lowbuild.yaml)",
        **_record(
            {
                "name": _NAME,
                "namespace": _text(
                    "Image namespace: web becomes NAMESPACE/web.",
                    pattern=load.NAMESPACE_PATTERN.pattern,
                ),
                "tag": _text("The tag every image gets.", pattern=load.TAG_PATTERN.pattern),
                "engine": {"enum": list(ENGINE_NAMES), "description": "The default engine."},
                "contexts": _list(_TEXT, "Context directories or globs (default contexts/*)."),
                "mirrors": _list(
                    _record(
                        {"prefix": _text("URL prefix"), "replacement": _text("tried first")},
                        required=("prefix", "replacement"),
                    ),
                    "URL prefix rewrites tried before an artifact's own URLs.",
                ),
                "bases": _list(
                    _record(
                        {
                            "ref": _text("An external base image."),
                            "id": _text("Its image ID.", pattern=load.IMAGE_ID_PATTERN.pattern),
                            "platforms": {
                                "type": "object",
                                "propertyNames": {"pattern": _PLATFORM_PATTERN},
                                "additionalProperties": {
                                    "oneOf": [
                                        _TEXT,
                                        _record(
                                            {
                                                "ref": _TEXT,
                                                "id": _text(
                                                    "Its image ID.",
                                                    pattern=load.IMAGE_ID_PATTERN.pattern,
                                                ),
                                            },
                                            required=("ref",),
                                        ),
                                    ]
                                },
                                "description": "The image it stands for on each platform.",
                            },
                        },
                        required=("ref",),
                        anyOf=_requiring("id", "platforms"),
                    ),
                    "External base images pinned to an image ID, per platform.",
                ),
                "max-download": {**_BYTES, "description": "Largest artifact download, e.g. 2GiB."},
                "registries": _list(
                    _record(
                        {
                            "name": _NAME,
                            "prefix": _text("host[:port][/path]", pattern=_REGISTRY_PREFIX),
                            "tls-verify": {"type": "boolean"},
                        },
                        required=("name", "prefix"),
                    ),
                    "Where the family is published.",
                ),
                "cache": _record(
                    {"registry": _text("A registry of `registries:`.")},
                    required=("registry",),
                    description="The registry cache.",
                ),
                "platforms": _PLATFORMS,
            },
            required=("name",),
        ),
    }


def image_schema() -> dict[str, Any]:
    """The schema of a context's image.yaml."""
    http = _record(
        {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "path": _text("Starts with /.", pattern="^/"),
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "expect": _TEXT,
            "timeout": _SECONDS,
        },
        required=("port",),
    )
    command = {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1}]}
    step = _record(
        {"run": _text("A shell command."), "copy": _TEXT, "dest": _text("Absolute.", pattern="^/")},
        description="Exactly one of run: or copy: (with dest:).",
        oneOf=_requiring("run", "copy"),
        dependentRequired={"copy": ["dest"]},
    )
    image = {
        "$schema": DIALECT,
        "title": "lowbuild image (image.yaml)",
        **_record(
            {
                "name": _NAME,
                "parent": _NAME,
                "kind": {"enum": list(load.KINDS)},
                "dockerfile": _TEXT,
                "tags": _list(_text("A tag.", pattern=load.TAG_PATTERN.pattern), "Extra tags."),
                "refs": _list(
                    _text("[host[:port]/]path[:tag]", pattern=load.IMAGE_REF_PATTERN.pattern),
                    "Whole references it is also built as; FROM may use them for the parent.",
                ),
                "args": _text_map("Build args.", key_pattern=load.ARG_NAME_PATTERN.pattern),
                "labels": _text_map("Image labels.", key_pattern=_LABEL_KEY),
                "network": {"enum": list(load.NETWORKS)},
                "platforms": _PLATFORMS,
                "artifacts": _list(
                    _record(
                        {
                            "file": _TEXT,
                            "urls": _list(_URL, "Tried in order; none: cache-only."),
                            "sha256": _text("64 hex digits.", pattern=load.SHA256_PATTERN.pattern),
                            "sha512": _text("128 hex digits.", pattern=load.SHA512_PATTERN.pattern),
                            "size": {**_BYTES, "description": "Its size, e.g. 512MiB."},
                            "sha256-url": {
                                **_URL,
                                "description": "Where upstream publishes this version's "
                                "sha256 (`lowbuild bump` checks a new version against it).",
                            },
                            "releases": _record(
                                {
                                    "index": {
                                        **_URL,
                                        "description": "A page listing the releases.",
                                    },
                                    "pattern": _text(
                                        "A regex whose one group is a version "
                                        "(`lowbuild outdated`)."
                                    ),
                                },
                                required=("index", "pattern"),
                            ),
                        },
                        required=("file", "sha256"),
                    ),
                    "Files fetched by URL and pinned by digest.",
                ),
                "packs": _list(
                    _record(
                        {"into": _TEXT, "from": _TEXT, "format": {"enum": list(load.PACK_FORMATS)}},
                        required=("into", "from"),
                    ),
                    "Directories packed reproducibly into the context.",
                ),
                "test": _record(
                    {"http": http, "command": command, "expect": _TEXT, "timeout": _SECONDS},
                    description="The smoke test: exactly one of http: or command:.",
                    oneOf=_requiring("http", "command"),
                    # An http test's expect: and timeout: go inside http:.
                    dependentSchemas={"http": {"not": {"anyOf": _requiring("expect", "timeout")}}},
                ),
                "commit": _record(
                    {
                        "base": _TEXT,
                        "author": _TEXT,
                        "message": _TEXT,
                        "steps": _list(step, "Run in a container, in order."),
                        "changes": _list(_TEXT, "docker commit --change instructions."),
                    },
                    required=("base",),
                    description="kind: commit only.",
                ),
            },
            required=("name",),
        ),
    }
    # kind: commit takes a commit: block and no dockerfile:; the other kind no commit:.
    image["if"] = {"required": ["kind"], "properties": {"kind": {"const": "commit"}}}
    image["then"] = {"required": ["commit"], "not": {"required": ["dockerfile"]}}
    image["else"] = {"not": {"required": ["commit"]}}
    return image
