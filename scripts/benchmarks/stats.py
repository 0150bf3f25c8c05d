"""Figures of a benchmark: samples → median/min/max, ratios, goals, and the Markdown table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Unit = Literal["s", "MB", "bytes", "count", "x"]


@dataclass(frozen=True)
class Figure:
    """One measured quantity: every sample of it, in the order taken."""

    section: str
    name: str
    samples: tuple[float, ...]
    unit: Unit = "s"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict[str, object]:
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "samples": list(self.samples),
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "note": self.note,
        }


def ratio(numerator: Figure, denominator: Figure) -> float:
    """Median over median; both figures come from the same bench run. A zero
    denominator gives infinity (never a ZeroDivisionError in the middle of a report)."""
    if denominator.median == 0:
        return float("inf")
    return numerator.median / denominator.median


@dataclass(frozen=True)
class Goal:
    """A goal of the issue: what was asked, the figure found, and whether it is met."""

    section: str
    text: str
    figure: str
    met: bool

    def to_json(self) -> dict[str, object]:
        return {"section": self.section, "goal": self.text, "figure": self.figure, "met": self.met}


@dataclass
class Results:
    """Everything one bench run found, in the order sections ran."""

    figures: list[Figure] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, object]:
        return {
            "figures": [f.to_json() for f in self.figures],
            "goals": [g.to_json() for g in self.goals],
            "notes": list(self.notes),
        }


def format_value(value: float, unit: Unit) -> str:
    """Human figures: seconds to 3 significant places, sizes in MB, counts as integers."""
    if value == float("inf"):
        return "inf"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "count" or unit == "bytes":
        return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    return f"{value}"


def markdown_table(results: Results) -> str:
    """Two Markdown tables: every figure (median, min, max, runs), then every goal."""
    lines = [
        "| section | measure | median | min | max | runs | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for f in results.figures:
        lines.append(
            f"| {_cell(f.section)} | {_cell(f.name)} | {format_value(f.median, f.unit)} | "
            f"{format_value(f.low, f.unit)} | {format_value(f.high, f.unit)} | "
            f"{len(f.samples)} | {_cell(f.note)} |"
        )
    if results.goals:
        lines += ["", "| section | goal | figure | met |", "|---|---|---|---|"]
        for g in results.goals:
            lines.append(
                f"| {_cell(g.section)} | {_cell(g.text)} | {_cell(g.figure)} "
                f"| {'yes' if g.met else 'NO'} |"
            )
    if results.notes:
        lines += ["", *(f"- {note}" for note in results.notes)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def figure_of(
    section: str, name: str, samples: Sequence[float], unit: Unit = "s", note: str = ""
) -> Figure:
    """A Figure from any sequence of samples (at least one)."""
    if not samples:
        raise ValueError(f"{section}/{name}: no samples")
    return Figure(section=section, name=name, samples=tuple(samples), unit=unit, note=note)
