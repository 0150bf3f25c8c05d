"""scripts/benchmarks/hosts.py: the scaling simulation's figures and what it reads back
from a run's logs (the lines lowbuild's handover writes)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchmarks.hosts import Family, generated_family, logged_seconds, scaling, width


def test_the_generated_family_is_the_same_every_time_and_acyclic() -> None:
    first, second = generated_family(500), generated_family(500)
    assert first == second and len(first.order) == 500
    position = {name: index for index, name in enumerate(first.order)}
    assert all(position[n] < position[name] for name in first.order for n in first.needs[name])
    assert set(first.durations.values()) <= {22.0, 9.0, 14.0, 60.0, 45.0, 35.0, 12.0, 4.0}


def test_a_chain_is_one_wide_and_a_fan_out_as_wide_as_its_children() -> None:
    chain = Family(("a", "b", "c"), {"a": (), "b": ("a",), "c": ("b",)}, dict.fromkeys("abc", 1.0))
    assert width(chain) == 1
    fan = Family(
        ("p", "c1", "c2", "c3"),
        {"p": (), "c1": ("p",), "c2": ("p",), "c3": ("p",)},
        {"p": 1.0, "c1": 2.0, "c2": 2.0, "c3": 5.0},
    )
    assert width(fan) == 3


def test_makespans_never_beat_their_bound_and_reach_it_at_the_familys_width() -> None:
    family = generated_family(200, seed=3)
    wide = width(family)
    rows = scaling(family, handover_s=1.0, counts=[1, 2, 4, wide])
    for row in rows:
        assert row.makespan >= row.bound - 1e-9
    assert rows[0].makespan == sum(family.durations.values())  # one slot: all in a row
    assert rows[-1].ratio <= 1.2
    assert [row.makespan for row in rows] == sorted((row.makespan for row in rows), reverse=True)


def test_logged_handover_and_push_seconds_are_read_back(tmp_path: Path) -> None:
    (tmp_path / "c2.log").write_text(
        "on endpoint b\n"
        "pushed to 127.0.0.1:5000/fan/parent:lb-0123 (sha256:" + "a" * 64 + ") in 0.14s\n"
        "parent handed over from a to b as 127.0.0.1:5000/fan/parent@sha256:"
        + "a"
        * 64
        + " in 0.21s\n"
        "pushed to 127.0.0.1:5000/fan/c2:lb-4567 (sha256:" + "b" * 64 + ") in 0.09s\n"
    )
    (tmp_path / "c1.log").write_text("building\n")
    assert logged_seconds(tmp_path) == ([0.21], [0.14, 0.09])
