"""The JSON Schemas of what `--json` prints (`lowbuild schema NAME`,
lowbuild/run/output_schemas.py): each is valid draft 2020-12 and listed by `lowbuild
schema -h`, and what the real commands print matches it: here every output a command
gives without a container engine, and the error object of failed runs (the engines'
outputs are checked where the integration tests print them). Each check also holds a
broken copy of the document against the schema, which must refuse it: a schema that
accepted anything would fail here."""

from __future__ import annotations

import copy
import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from test_cli_conventions import clean_interrupted_while_waiting
from test_export_bake import write_family as write_bake_family
from test_graph_cli import run_lowbuild, write_family
from test_json_outputs import TOOL, TOOL_SHA, lowbuild_json, project_with_artifact

from lowbuild.context.pack import pack_deterministic
from lowbuild.errors import error_kinds
from lowbuild.export.bundle import MANIFEST, MANIFEST_SUM, BundleMember, Manifest
from lowbuild.run.output_schemas import OUTPUT_NAMES, output_schema

PAYLOAD = b"carried across the gap\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def problems(name: str, document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(output_schema(name))
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def first_record(document: Any) -> dict[str, Any]:
    """The document itself when it is an object, else its first item (a record)."""
    record = document if isinstance(document, dict) else document[0]
    assert isinstance(record, dict)
    return record


def assert_conforms(name: str, document: Any) -> Any:
    """`document` matches schema `name`, and copies of it with a key of its first record
    removed, or an unknown key added, do not."""
    assert problems(name, document) == []
    for key in first_record(document):
        missing = copy.deepcopy(document)
        del first_record(missing)[key]
        assert problems(name, missing), f"{name} accepts a record without {key!r}"
    unknown = copy.deepcopy(document)
    first_record(unknown)["surprise"] = 1
    assert problems(name, unknown), f"{name} accepts an unknown key"
    return document


def no_engine_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH holds no program at all: no engine can be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "LOWBUILD_CACHE": str(tmp_path / "cache")}


def artifact_bundle(root: Path) -> Path:
    """A bundle of one artifact and no image, written by the real deterministic tar
    writer in the layout `bundle export` gives (that needs an engine; this does not)."""
    stage = root / "bundle-stage"
    member = f"artifacts/sha256/{PAYLOAD_SHA}"
    (stage / "artifacts" / "sha256").mkdir(parents=True)
    (stage / member).write_bytes(PAYLOAD)
    manifest = Manifest(
        project="gap",
        engine="podman",
        members=(BundleMember(member, "artifact", "payload.txt", PAYLOAD_SHA, len(PAYLOAD)),),
        images=(),
    ).to_bytes()
    (stage / MANIFEST).write_bytes(manifest)
    (stage / MANIFEST_SUM).write_text(f"{hashlib.sha256(manifest).hexdigest()}  {MANIFEST}\n")
    bundle = root / "gap.bundle"
    pack_deterministic(stage, bundle, "tar")
    return bundle


def test_every_schema_is_draft_2020_12_and_schema_prints_it_and_lists_them(
    tmp_path: Path,
) -> None:
    for name in OUTPUT_NAMES:
        schema = output_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    helped = run_lowbuild("schema", "-h", cwd=tmp_path, env={"COLUMNS": "500"})
    assert helped.returncode == 0, helped.stderr
    for name in ("project", "image", *OUTPUT_NAMES):
        assert f" {name}," in helped.stdout or f" {name} (" in helped.stdout, name
    printed = run_lowbuild("schema", "plan", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == output_schema("plan")
    unknown = run_lowbuild("schema", "plans", cwd=tmp_path)
    assert unknown.returncode == 2 and "bundle-import" in unknown.stderr


def test_graph_fetch_and_cache_outputs_match_their_schemas(tmp_path: Path) -> None:
    root = project_with_artifact(tmp_path)
    assert_conforms("graph", lowbuild_json(root, "graph"))
    downloaded = assert_conforms("fetch", lowbuild_json(root, "fetch"))
    assert downloaded[0]["source"].startswith("file://")
    assert assert_conforms("fetch", lowbuild_json(root, "fetch"))[0]["source"] == "cache"
    assert_conforms("cache-ls", lowbuild_json(root, "cache", "ls"))
    assert_conforms("cache-verify", lowbuild_json(root, "cache", "verify"))
    served = str(root / "served" / "tool.txt")
    assert_conforms("cache-add", lowbuild_json(root, "cache", "add", served))
    [digest] = assert_conforms("fetch-digests", lowbuild_json(root, "fetch", "--print-digests"))
    assert digest["sha256"] == TOOL_SHA


def test_print_digests_of_a_url_that_fails_matches_its_schema(tmp_path: Path) -> None:
    root = project_with_artifact(tmp_path)
    (root / "served" / "tool.txt").unlink()

    done = run_lowbuild("fetch", "--print-digests", "--json", cwd=root)

    assert done.returncode == 1, done.stderr
    [failed] = assert_conforms("fetch-digests", json.loads(done.stdout))
    assert failed["sha256"] is None and failed["error"]


def test_export_bake_output_matches_and_names_what_was_written(tmp_path: Path) -> None:
    write_bake_family(tmp_path)
    env = {"LOWBUILD_CACHE": str(tmp_path / "cache")}

    done = run_lowbuild("export", "bake", "-o", "out/bake.json", "--json", cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    summary = assert_conforms("export-bake", json.loads(done.stdout))
    assert summary["file"] == str(tmp_path / "out" / "bake.json")
    assert summary["stage"] == str(tmp_path / ".lowbuild" / "bake-stage")
    written = json.loads((tmp_path / "out" / "bake.json").read_text())
    for wave in summary["waves"]:
        assert written["group"][wave["group"]]["targets"] == wave["targets"]
    assert [w["targets"] for w in summary["waves"]] == [["base"], ["api", "web"], ["worker"]]
    for target in summary["targets"]:
        assert written["target"][target["target"]]["context"] == target["context"]
        assert Path(target["dockerfile"]).is_file()
    assert summary["skipped"] == ["manual"]


def test_bundle_ls_and_import_outputs_match_and_import_needs_no_engine_for_artifacts(
    tmp_path: Path,
) -> None:
    bundle = artifact_bundle(tmp_path)
    env = no_engine_env(tmp_path)
    listed = assert_conforms("bundle-ls", lowbuild_json(tmp_path, "bundle", "ls", str(bundle)))
    assert [m["kind"] for m in listed] == ["manifest", "manifest", "artifact"]

    first = run_lowbuild("bundle", "import", str(bundle), "--json", cwd=tmp_path, env=env)
    again = run_lowbuild("bundle", "import", str(bundle), "--json", cwd=tmp_path, env=env)

    assert first.returncode == 0, first.stderr
    imported = assert_conforms("bundle-import", json.loads(first.stdout))
    assert imported["engine"] is None and imported["images"] == []
    [artifact] = imported["artifacts"]
    assert (artifact["name"], artifact["sha256"], artifact["size"]) == (
        "payload.txt",
        PAYLOAD_SHA,
        len(PAYLOAD),
    )
    assert Path(artifact["path"]).read_bytes() == PAYLOAD
    assert artifact["already_present"] is False
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["artifacts"][0]["already_present"] is True
    # Without --json, the lines it always printed.
    plain = run_lowbuild("bundle", "import", str(bundle), cwd=tmp_path, env=env)
    assert plain.stdout == f"artifact sha256:{PAYLOAD_SHA} in {tmp_path / 'cache'}\n"


def test_doctor_output_on_a_host_without_engines_matches_its_schema(tmp_path: Path) -> None:
    done = run_lowbuild("doctor", "--json", cwd=tmp_path, env=no_engine_env(tmp_path))

    assert done.returncode == 3, done.stderr
    reports = assert_conforms("doctor", json.loads(done.stdout))
    assert reports and not any(report["ok"] for report in reports)


def test_failed_runs_print_an_error_object_that_matches_its_schema(tmp_path: Path) -> None:
    root = tmp_path / "p"
    write_family(root)
    (root / "contexts" / "web" / "image.yaml").write_text("name: web\nparent: [base\n")
    spec = run_lowbuild("plan", "--json", cwd=root)
    assert spec.returncode == 2, spec.stderr
    assert assert_conforms("error", json.loads(spec.stdout))["error"]["kind"] == "spec"

    no_engine = run_lowbuild(
        "plan", "--json", cwd=project_with_artifact(tmp_path / "q"), env=no_engine_env(tmp_path)
    )
    assert no_engine.returncode == 3, no_engine.stderr
    error = assert_conforms("error", json.loads(no_engine.stdout))["error"]
    assert error["kind"] == "engine-unavailable" and error["exit_code"] == 3

    bundle = artifact_bundle(tmp_path)
    with tarfile.open(bundle) as tar:
        offset = tar.getmember(f"artifacts/sha256/{PAYLOAD_SHA}").offset_data
    data = bytearray(bundle.read_bytes())
    data[offset] ^= 0xFF
    bundle.write_bytes(bytes(data))
    refused = run_lowbuild(
        "bundle", "import", str(bundle), "--json", cwd=tmp_path, env=no_engine_env(tmp_path)
    )
    assert refused.returncode == 4, refused.stderr
    error = assert_conforms("error", json.loads(refused.stdout))["error"]
    assert error["kind"] == "verification" and "nothing was imported" in error["message"]


def test_an_interrupted_run_prints_an_error_object_that_matches_its_schema(
    tmp_path: Path,
) -> None:
    """Interrupted where the command has no cleanup of its own to report (waiting for the
    project lock another run holds): the error object main() writes itself."""
    code, stdout, stderr = clean_interrupted_while_waiting(tmp_path, {"LOWBUILD_JSON": "1"})
    assert code == 130, stderr
    error = assert_conforms("error", json.loads(stdout))["error"]
    assert (error["kind"], error["exit_code"]) == ("interrupted", 130)


def test_the_error_schema_knows_every_kind_of_error() -> None:
    kinds = output_schema("error")["properties"]["error"]["properties"]["kind"]["enum"]
    assert kinds == list(error_kinds())
    assert {"spec", "usage", "verification", "engine-unavailable", "interrupted"} <= set(kinds)


@pytest.mark.parametrize(
    ("name", "document"),
    [
        (
            "plan",
            {
                "engine": "podman",
                "images": [
                    {
                        "image": "base",
                        "ref": "lowbuild/base:latest",
                        "action": "rebuild",  # not an action the planner has
                        "reasons": ["new image"],
                        "needs": [],
                        "existing_id": None,
                        "fingerprint": None,
                    }
                ],
            },
        ),
        ("cache-ls", [{"sha256": TOOL_SHA.upper(), "size": len(TOOL), "names": []}]),
        ("doctor", [{"engine": "podmn", "ok": False, "version": None, "checks": []}]),
        ("error", {"error": {"kind": "spec", "message": "x", "exit_code": 2}}),
    ],
)
def test_a_schema_refuses_a_value_its_producer_never_writes(name: str, document: Any) -> None:
    assert problems(name, document)
