"""When a file in a pack's source directory changes, the rebuild reason names that file,
not the archive lowbuild makes from it. Real contexts on disk, real inventories, the
labels a build would have stored; only the engine is left out (the reason text needs none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lowbuild.context.assemble import take_inventory
from lowbuild.plan.fingerprint import BuildInputs, fingerprint_labels, inputs_for, rebuild_reasons
from lowbuild.plan.graph import FamilyGraph, Node, build_graph
from lowbuild.spec.load import load_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "lowbuild.yaml").write_text("name: shop\n")
    context = tmp_path / "contexts" / "web"
    (context / "site" / "css").mkdir(parents=True)
    (context / "image.yaml").write_text(
        "name: web\npacks:\n"
        "  - {into: www.tar.gz, from: site/}\n  - {into: css.tar, from: site/css}\n"
    )
    (context / "Dockerfile").write_text("FROM scratch\nADD www.tar.gz /srv/\n")
    (context / ".dockerignore").write_text("site/\n")
    (context / "nginx.conf").write_text("server {}\n")
    (context / "site" / "index.html").write_text("<h1>welcome</h1>\n")
    (context / "site" / "css" / "main.css").write_text("h1 {}\n")
    return tmp_path


def web(project: Path) -> Node:
    graph: FamilyGraph = build_graph(load_project(project / "lowbuild.yaml"))
    return graph.nodes["web"]


def labels_now(project: Path) -> dict[str, str]:
    return fingerprint_labels(inputs_now(project))


def inputs_now(project: Path) -> BuildInputs:
    node = web(project)
    inventory = take_inventory(node.spec)
    return inputs_for(
        node,
        engine="podman",
        context_digest=inventory.digest,
        context_files=inventory.files,
        pack_files=inventory.pack_files,
        family_ids={},
        external_ids={},
    )


def test_edited_file_in_a_pack_is_named_by_its_path(project: Path) -> None:
    built = labels_now(project)
    (project / "contexts" / "web" / "site" / "index.html").write_text("<h1>hello</h1>\n")

    reasons = rebuild_reasons(built, inputs_now(project))

    assert reasons == ("context changed: packs site/ → site/index.html",)


def test_added_and_removed_files_of_a_pack_are_marked(project: Path) -> None:
    built = labels_now(project)
    site = project / "contexts" / "web" / "site"
    (site / "css" / "main.css").unlink()
    (site / "about.html").write_text("about\n")
    (project / "contexts" / "web" / "nginx.conf").write_text("server { listen 80; }\n")

    reasons = rebuild_reasons(built, inputs_now(project))

    assert reasons == (
        "context changed: files nginx.conf; "
        "packs site/css/ → site/css/main.css (removed); "
        "packs site/ → site/about.html (added), site/css/main.css (removed)",
    )


def test_unchanged_pack_gives_no_reason(project: Path) -> None:
    assert rebuild_reasons(labels_now(project), inputs_now(project)) == ()
