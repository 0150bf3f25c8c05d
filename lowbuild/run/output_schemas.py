"""JSON Schemas (draft 2020-12) of what `--json` prints: one per command output, plus the
error object a failed run prints instead (`lowbuild schema NAME`).

Each schema mirrors the one producer of its document (named in its description), key
for key: records forbid keys they do not list and require every key the producer always
writes. The enumerations come from the code's own types, so a new engine, action or
state reaches the schemas by itself. tests/unit/test_output_schemas.py validates the
real commands' output against them, and the integration tests that print the engine
commands' JSON validate it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

DIALECT = "https://json-schema.org/draft/2020-12/schema"

Schema = dict[str, Any]

_STR: Schema = {"type": "string"}
_STR_OR_NULL: Schema = {"type": ["string", "null"]}
_BOOL: Schema = {"type": "boolean"}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_SHA256_HEX: Schema = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_FINGERPRINT: Schema = {"type": ["string", "null"], "pattern": "^sha256:[0-9a-f]{64}$"}
_STRINGS: Schema = {"type": "array", "items": _STR}


def _record(properties: Schema, *, optional: tuple[str, ...] = ()) -> Schema:
    """An object with exactly these keys, all required but `optional` ones."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": [key for key in properties if key not in optional],
    }


def _list(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def _enum(values: tuple[str, ...], *, null: bool = False) -> Schema:
    return {"enum": [*values, None] if null else list(values)}


def _engine_names() -> tuple[str, ...]:
    from lowbuild.spec.model import ENGINE_NAMES

    return ENGINE_NAMES


def _document(name: str, command: str, producer: str, body: Schema) -> Schema:
    return {
        "$schema": DIALECT,
        "$id": f"lowbuild:output/{name}",
        "title": f"lowbuild {command}",
        "description": f"What `lowbuild {command}` prints on stdout"
        + (" when the run fails" if name == "error" else "")
        + f" (written by {producer}).",
        **body,
    }


# ---- the records ----


def _graph() -> Schema:
    image = _record(
        {
            "name": _STR,
            "parent": _STR_OR_NULL,
            "needs": _STRINGS,
            "external": _STRINGS,
            "refs": _STRINGS,
        }
    )
    edge = _record({"from": _STR, "to": _STR, "parent": _BOOL})
    return _record(
        {"project": _STR, "images": _list(image), "external": _STRINGS, "edges": _list(edge)}
    )


def _fetch() -> Schema:
    return _list(
        _record(
            {
                "image": _STR,
                "file": _STR,
                "sha256": _SHA256_HEX,
                "source": {**_STR, "description": "the URL it came from (redacted), or 'cache'"},
                "path": _STR,
            }
        )
    )


def _fetch_digests() -> Schema:
    return _list(
        _record(
            {
                "file": _STR,
                "url": _STR,
                "sha256": {"anyOf": [_SHA256_HEX, {"type": "null"}]},
                "error": _STR_OR_NULL,
            }
        )
    )


def _cache_ls() -> Schema:
    return _list(_record({"sha256": _SHA256_HEX, "size": _COUNT, "names": _STRINGS}))


def _outdated() -> Schema:
    return _list(
        _record(
            {
                "image": _STR,
                "file": _STR,
                "pinned": {**_STR, "description": "the version in the pinned file's name"},
                "newer": {**_STRINGS, "description": "upstream's newer versions, oldest first"},
                "latest": _STR_OR_NULL,
                "index": _STR,
                "error": {**_STR_OR_NULL, "description": "why it could not be checked"},
            }
        )
    )


def _cache_verify() -> Schema:
    return _record({"verified": _COUNT, "cache": _STR})


def _cache_add() -> Schema:
    return _list(_record({"path": _STR, "file": _STR, "sha256": _SHA256_HEX}))


def _bundle_ls() -> Schema:
    from lowbuild.export.bundle import MemberKind

    return _list(
        _record(
            {
                "path": _STR,
                "kind": _enum(get_args(MemberKind)),
                "name": _STR,
                "sha256": _SHA256_HEX,
                "size": _COUNT,
            }
        )
    )


def _bundle_import() -> Schema:
    artifact = _record(
        {
            "name": _STR,
            "sha256": _SHA256_HEX,
            "size": _COUNT,
            "path": _STR,
            "already_present": _BOOL,
        }
    )
    image = _record(
        {
            "ref": _STR,
            "id": _STR,
            "built": _BOOL,
            "image": _STR_OR_NULL,
            "fingerprint": _STR_OR_NULL,
            "already_present": _BOOL,
        }
    )
    return _record(
        {
            "bundle": _STR,
            "project": _STR,
            "engine": {
                **_enum(_engine_names(), null=True),
                "description": "null: the bundle held no image, so no engine was needed",
            },
            "cache": _STR,
            "artifacts": _list(artifact),
            "images": _list(image),
            "documents": {
                **_STRINGS,
                "description": "the SBOMs and provenance statements written to the project's "
                ".lowbuild/ (none without a project)",
            },
        }
    )


def _export_bake() -> Schema:
    wave = _record({"group": {"type": "string", "pattern": "^wave-[0-9]+$"}, "targets": _STRINGS})
    target = _record(
        {"image": _STR, "target": _STR, "context": _STR, "dockerfile": _STR, "tags": _STRINGS}
    )
    return _record(
        {
            "file": _STR,
            "stage": _STR,
            "waves": _list(wave),
            "targets": _list(target),
            "skipped": {**_STRINGS, "description": "commit recipes: bake cannot express them"},
        }
    )


def _doctor() -> Schema:
    check = _record({"name": _STR, "ok": _BOOL, "detail": _STR, "fix": _STR})
    return _list(
        _record(
            {
                "engine": _enum(_engine_names()),
                "ok": _BOOL,
                "version": _STR_OR_NULL,
                "checks": _list(check),
                "family_bases": {
                    **_list(check),
                    "description": "inside a project, for a working engine: one check per "
                    "external base image (its name is the image's)",
                },
                "emulation": {
                    **_list(check),
                    "description": "a family with `platforms:`: binfmt_misc and a qemu handler "
                    "per foreign platform (the host's, the same for every engine)",
                },
                "endpoint": {**_STR, "description": "with --hosts/--endpoint: its name"},
                "url": {**_STR, "description": "with --hosts/--endpoint: its URL ('': local)"},
            },
            optional=("endpoint", "url"),
        )
    )


_SIZE: Schema = {"type": ["integer", "null"], "description": "bytes, from the engine's inspect"}


def _images() -> Schema:
    previous = _record({"id": _STR, "size": _SIZE, "created": _STR_OR_NULL})
    image = _record(
        {
            "image": _STR,
            "ref": _STR,
            "built": _BOOL,
            "id": _STR_OR_NULL,
            "tags": _STRINGS,
            "size": _SIZE,
            "created": _STR_OR_NULL,
            "parent": {**_STR_OR_NULL, "description": "a family image's name or a base's ref"},
            "adds": {"type": ["integer", "null"], "description": "size over the parent's"},
            "previous": {"anyOf": [previous, {"type": "null"}]},
            "changes": {**_STRINGS, "description": "which inputs differ from the previous"},
            "size_change": {"type": ["integer", "null"]},
        }
    )
    return _record({"engine": _enum(_engine_names()), "images": _list(image)})


def _init() -> Schema:
    artifact = _record({"file": _STR, "sha256": _SHA256_HEX, "size": _COUNT, "urls": _STRINGS})
    image = _record(
        {
            "name": _STR,
            "directory": _STR,
            "parent": _STR_OR_NULL,
            "tags": _STRINGS,
            "refs": _STRINGS,
            "artifacts": _list(artifact),
            "test_port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
        }
    )
    finding = _record(
        {
            "kind": _STR,
            "message": _STR,
            "file": _STR_OR_NULL,
            "line": {"type": ["integer", "null"], "minimum": 1},
        }
    )
    return _record(
        {
            "root": _STR,
            "dry_run": _BOOL,
            "project": _STR,
            "images": _list(image),
            "bases": {"type": "object", "additionalProperties": _STRINGS},
            "written": _STRINGS,
            "unchanged": _STRINGS,
            "admitted": _STRINGS,
            "findings": _list(finding),
        }
    )


def _prune() -> Schema:
    item = _record(
        {
            "id": _STR,
            "ref": _STR,
            "tags": _STRINGS,
            "size": _SIZE,
            "created": _STR_OR_NULL,
            "removed": _BOOL,
            "kept": {**_STR_OR_NULL, "description": "why it stays; null when removed"},
        }
    )
    measured = {"type": ["integer", "null"], "minimum": 0}
    return _record(
        {
            "dry_run": _BOOL,
            "removed": _list(item),
            "kept": _list(item),
            "freed": {**measured, "description": "bytes; null on a dry run or nothing removed"},
            "store_before": measured,
            "store_after": measured,
        }
    )


def _plan() -> Schema:
    from lowbuild.plan.planner import Action

    image = _record(
        {
            "image": _STR,
            "ref": _STR,
            "action": _enum(get_args(Action)),
            "reasons": _STRINGS,
            "needs": _STRINGS,
            "existing_id": _STR_OR_NULL,
            "fingerprint": _FINGERPRINT,
            "endpoint": {
                **_STR,
                "description": "with endpoints: where it is held (up to date) or meant to go",
            },
        },
        optional=("endpoint",),
    )
    endpoints = {**_STRINGS, "description": "with endpoints: their names, as declared"}
    return _record(
        {"engine": _enum(_engine_names()), "images": _list(image), "endpoints": endpoints},
        optional=("endpoints",),
    )


def _test_record() -> Schema:
    return _record({"image": _STR, "passed": _BOOL, "detail": _STR, "seconds": {"type": "number"}})


def _push_record() -> Schema:
    return _record(
        {
            "image": _STR,
            "registry": _STR,
            "pushed": _BOOL,
            "ref": {**_STR_OR_NULL, "description": "PREFIX/IMAGE@DIGEST, null when not pushed"},
            "tags": _STRINGS,
            "digest": _STR_OR_NULL,
            "fingerprint": _STR_OR_NULL,
            "unchanged": _BOOL,
            "error": _STR_OR_NULL,
            "sbom": {
                **_STR_OR_NULL,
                "description": "sha256 of the image's SBOM (its lowbuild.sbom label; "
                "`lowbuild sbom IMAGE` prints it), null for an image built without one",
            },
            "signed_by": {
                **_STR_OR_NULL,
                "description": "the fingerprint of the GPG key that signed it (push --sign)",
            },
            "platforms": {
                "type": "object",
                "additionalProperties": _STR,
                "description": "a manifest list (a family with `platforms:`): each "
                "platform → the digest of its image in the list",
            },
        },
        optional=("platforms",),
    )


def _build() -> Schema:
    from lowbuild.run.scheduler import State

    seconds = {"type": ["number", "null"]}
    return _list(
        _record(
            {
                "image": _STR,
                "ref": _STR,
                "state": _enum(get_args(State)),
                "image_id": _STR,
                "tags": _STRINGS,
                "duration": seconds,
                "started": seconds,
                "ended": seconds,
                "blocked_by": _STR_OR_NULL,
                "detail": _STR,
                "log": _STR,
                "test": {**_test_record(), "description": "with --test, when the test ran"},
                "push": {**_list(_push_record()), "description": "with --push"},
                "endpoint": {
                    **_STR_OR_NULL,
                    "description": "with endpoints: where it was built or is held",
                },
                "handover_ref": {
                    **_STR_OR_NULL,
                    "description": "with several endpoints: PREFIX/IMAGE@DIGEST in the "
                    "handover registry, null when it was not pushed there",
                },
            },
            optional=("test", "push", "endpoint", "handover_ref"),
        )
    )


def _test() -> Schema:
    return _list(_test_record())


def _push() -> Schema:
    return _list(_push_record())


def _error() -> Schema:
    from lowbuild.errors import error_kinds

    error = _record(
        {
            "kind": _enum(error_kinds()),
            "message": _STR,
            "file": _STR_OR_NULL,
            "line": {"type": ["integer", "null"], "minimum": 1},
            "column": {"type": ["integer", "null"], "minimum": 1},
            "exit_code": {"type": "integer", "minimum": 1},
        }
    )
    return _record({"error": error})


def _report() -> Schema:
    from lowbuild.run.scheduler import State

    seconds: Schema = {"type": ["number", "null"], "minimum": 0}
    size: Schema = {"type": ["integer", "null"]}
    step = _record({"name": _STR, "start": seconds, "duration": seconds})
    test = _record(
        {
            "passed": _BOOL,
            "detail": _STR,
            "seconds": seconds,
            "start": seconds,
            "end": seconds,
        }
    )
    image = _record(
        {
            "name": _STR,
            "state": {
                **_enum(get_args(State), null=True),
                "description": "null: a test or push run",
            },
            "parents": {**_STRINGS, "description": "family images it is built from"},
            "bases": {**_STRINGS, "description": "images from outside the family it uses"},
            "reason": _STR,
            "image_id": _STR,
            "endpoint": _STR_OR_NULL,
            "log": _STR_OR_NULL,
            "start": {**seconds, "description": "seconds from the run's start (null: no span)"},
            "end": seconds,
            "track": {"type": ["integer", "null"]},
            "steps": {**_list(step), "description": "the phases of its build"},
            "size": {**size, "description": "bytes, as the engine says now (null: unknown)"},
            "adds": {**size, "description": "bytes over its parent's (or base's) image"},
            "test": {"oneOf": [test, {"type": "null"}]},
            "push": _list(_push_record()),
            "critical": {**_BOOL, "description": "on the run's critical path"},
        }
    )
    phase = _record(
        {
            "name": _STR,
            "cat": _STR,
            "start": seconds,
            "duration": seconds,
            "track": _COUNT,
            "args": {"type": "object"},
        }
    )
    return _record(
        {
            "run": _STR,
            "command": _enum(("build", "test", "push")),
            "engine": _STR,
            "project": _STR,
            "started": _STR,
            "duration": seconds,
            "counts": {"type": "object", "additionalProperties": _COUNT},
            "critical_path": {**_STRINGS, "description": "the chain of waits, first to last"},
            "critical_waits": _list(
                _record({"after": _STR, "image": _STR, "why": _enum(("parent", "job slot"))})
            ),
            "critical_seconds": seconds,
            "images": _list(image),
            "phases": _list(phase),
            "tracks": {"type": "object", "additionalProperties": _STR},
        }
    )


# name → (command as typed, producer, schema body)
_OUTPUTS: dict[str, tuple[str, str, Callable[[], Schema]]] = {
    "graph": ("graph --json", "plan/graph.py _graph_record", _graph),
    "fetch": ("fetch --json", "run/workflow.py _fetched_record", _fetch),
    "fetch-digests": ("fetch --print-digests --json", "run/workflow.py run_fetch", _fetch_digests),
    "cache-ls": ("cache ls --json", "run/workflow.py run_cache_ls", _cache_ls),
    "cache-verify": ("cache verify --json", "run/workflow.py run_cache_verify", _cache_verify),
    "cache-add": ("cache add --json", "run/workflow.py run_cache_add", _cache_add),
    "bundle-ls": ("bundle ls --json", "export/bundle.py BundleMember.to_json", _bundle_ls),
    "bundle-import": (
        "bundle import --json",
        "run/exports.py run_bundle_import",
        _bundle_import,
    ),
    "export-bake": ("export bake --json", "export/bake.py BakeFile.summary", _export_bake),
    "doctor": ("doctor --json", "doctor/probes.py EngineReport.to_json", _doctor),
    "plan": ("plan --json", "run/workflow.py run_plan, plan/planner.py Plan.to_records", _plan),
    "build": ("build --json", "run/workflow.py _report", _build),
    "test": ("test --json", "run/report.py test_record", _test),
    "push": ("push --json", "run/publish.py PushOutcome.to_json", _push),
    "images": ("images --json", "run/images.py FamilyImage.to_json", _images),
    "prune": ("prune --json", "run/images.py PruneResult.to_json", _prune),
    "init": ("init --json", "run/adopt.py InitResult.to_json", _init),
    "outdated": ("outdated --json", "run/bump.py OutdatedRecord.to_json", _outdated),
    "report": ("report --json", "run/insight.py report_data", _report),
    "error": ("COMMAND --json", "cli.py error_record", _error),
}
# Each name is the command whose `--json` output it describes, its words joined by '-'.
OUTPUT_NAMES: tuple[str, ...] = tuple(_OUTPUTS)


def output_schema(name: str) -> Schema:
    """The JSON Schema of output `name` (one of OUTPUT_NAMES; KeyError otherwise)."""
    command, producer, body = _OUTPUTS[name]
    return _document(name, command, producer, body())
