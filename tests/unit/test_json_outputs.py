"""`--json` on the commands a script parses without an engine: graph, fetch (and
--print-digests), cache ls, verify and add. Each prints one JSON document on stdout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from test_graph_cli import run_lowbuild, write_family

TOOL = b"a tool\n"
TOOL_SHA = hashlib.sha256(TOOL).hexdigest()


def project_with_artifact(root: Path) -> Path:
    write_family(root)
    served = root / "served" / "tool.txt"
    served.parent.mkdir()
    served.write_bytes(TOOL)
    image = root / "contexts" / "base" / "image.yaml"
    image.write_text(
        image.read_text()
        + f"artifacts:\n  - file: tool.txt\n    urls: ['{served.as_uri()}']\n"
        + f"    sha256: {TOOL_SHA}\n"
    )
    return root


def lowbuild_json(root: Path, *args: str) -> Any:
    """stdout of `lowbuild ARGS --json` in `root` (cache: root/cache), which must succeed."""
    done = run_lowbuild(*args, "--json", cwd=root, env={"LOWBUILD_CACHE": str(root / "cache")})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_graph_as_json_names_images_parents_and_edges(tmp_path: Path) -> None:
    write_family(tmp_path)
    graph = lowbuild_json(tmp_path, "graph")
    images = {image["name"]: image for image in graph["images"]}
    assert images["web"]["parent"] == "base" and images["web"]["needs"] == ["base"]
    assert images["base"]["external"] == ["localhost/lowbuild/busybox:latest"]
    assert graph["external"] == ["localhost/lowbuild/busybox:latest"]
    assert {"from": "base", "to": "web", "parent": True} in graph["edges"]
    assert lowbuild_json(tmp_path, "graph", "--format", "json") == graph


def test_fetch_and_the_cache_commands_as_json(tmp_path: Path) -> None:
    root = project_with_artifact(tmp_path)
    [fetched] = lowbuild_json(root, "fetch")
    assert fetched["file"] == "tool.txt" and fetched["sha256"] == TOOL_SHA
    assert fetched["source"].startswith("file://")
    assert Path(fetched["path"]).read_bytes() == TOOL
    [again] = lowbuild_json(root, "fetch")
    assert again["source"] == "cache"

    assert lowbuild_json(root, "cache", "ls") == [
        {"sha256": TOOL_SHA, "size": len(TOOL), "names": ["tool.txt"]}
    ]
    assert lowbuild_json(root, "cache", "verify")["verified"] == 1
    [admitted] = lowbuild_json(root, "cache", "add", str(root / "served" / "tool.txt"))
    assert admitted == {
        "path": str(root / "served" / "tool.txt"),
        "file": "tool.txt",
        "sha256": TOOL_SHA,
    }
    [digest] = lowbuild_json(root, "fetch", "--print-digests")
    assert digest["sha256"] == TOOL_SHA and digest["error"] is None
