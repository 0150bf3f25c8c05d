"""scripts/bench.py's pure parts: figures, ratios, the Markdown table, generated inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchmarks.generate import (
    TreeShape,
    family_parents,
    tree_plan,
    write_family,
    write_tree,
)
from benchmarks.stats import Goal, Results, figure_of, markdown_table, ratio

from lowbuild.plan.graph import build_graph
from lowbuild.spec.load import load_project


def test_figure_reports_median_min_and_max_of_its_runs() -> None:
    figure = figure_of("1 no-op", "lowbuild", [0.9, 0.3, 0.5, 0.4])
    assert (figure.median, figure.low, figure.high) == (0.45, 0.3, 0.9)
    assert figure.to_json()["samples"] == [0.9, 0.3, 0.5, 0.4]


def test_figure_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="no samples"):
        figure_of("4 packing", "lowbuild", [])


def test_ratio_is_median_over_median_and_never_divides_by_zero() -> None:
    slow = figure_of("s", "podman", [10.0, 12.0, 11.0])
    fast = figure_of("s", "lowbuild", [1.0, 1.2, 1.1])
    assert ratio(slow, fast) == pytest.approx(10.0)
    assert ratio(slow, figure_of("s", "zero", [0.0])) == float("inf")


def test_markdown_table_lists_figures_then_goals_with_met_or_not() -> None:
    results = Results()
    results.add(figure_of("1 no-op", "lowbuild build", [0.5, 0.4, 0.6]))
    results.add(figure_of("5 fetching", "peak RSS", [40.0, 42.5], "MB"))
    results.add(figure_of("4 packing", "tar | gzip", [2.0]))
    results.goals.append(Goal("1 no-op", "under 1 s", "0.500 s", True))
    results.goals.append(Goal("4 packing", "within 1.3x | tar", "1.40x", False))
    results.notes.append("machine busy")
    table = markdown_table(results)
    lines = table.splitlines()
    assert lines[0] == "| section | measure | median | min | max | runs | note |"
    assert "| 1 no-op | lowbuild build | 0.500 s | 0.400 s | 0.600 s | 3 |  |" in lines
    assert "| 5 fetching | peak RSS | 41.2 MB | 40.0 MB | 42.5 MB | 2 |  |" in lines
    assert "| 4 packing | tar \\| gzip | 2.000 s | 2.000 s | 2.000 s | 1 |  |" in lines
    assert "| 1 no-op | under 1 s | 0.500 s | yes |" in lines
    assert "| 4 packing | within 1.3x \\| tar | 1.40x | NO |" in lines
    assert lines[-1] == "- machine busy"


def test_tree_plan_is_deterministic_and_adds_up_to_the_size_asked() -> None:
    shape = TreeShape(total_bytes=1_000_000, files=300, per_dir=25)
    plan = tree_plan(shape)
    assert plan == tree_plan(shape)
    assert len(plan) == 300
    assert sum(size for _, size, _ in plan) == 1_000_000
    assert len({path.rsplit("/", 1)[0] for path, _, _ in plan}) == 12
    assert plan != tree_plan(TreeShape(total_bytes=1_000_000, files=300, per_dir=25, seed=8))


def test_written_trees_are_byte_identical(tmp_path: Path) -> None:
    shape = TreeShape(total_bytes=200_000, files=40, per_dir=10)
    first = write_tree(tmp_path / "a", shape)
    second = write_tree(tmp_path / "b", shape)
    assert first == second
    some = tree_plan(shape)[3][0]
    assert (tmp_path / "a" / some).read_bytes() == (tmp_path / "b" / some).read_bytes()
    assert sum(p.stat().st_size for p in (tmp_path / "a").rglob("*") if p.is_file()) == 200_000


def test_generated_family_is_acyclic_and_loads_as_a_project(tmp_path: Path) -> None:
    parents = family_parents(300)
    assert parents == family_parents(300)
    assert all(parent is None or parent < index for index, parent in enumerate(parents))
    write_family(tmp_path, 60, namespace="gen", base="localhost/lowbuild/busybox:latest")
    project = load_project(tmp_path / "lowbuild.yaml")
    graph = build_graph(project)
    assert len(graph.nodes) == 60
    assert graph.external_images() == {
        "localhost/lowbuild/busybox:latest": tuple(f"img{i:05d}" for i in range(10))
    }
