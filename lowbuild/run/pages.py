"""The report as one self-contained HTML page: inline CSS and SVG, no script from
elsewhere, no font, no image file. Opened from disk, it asks the network for nothing.

The drawing is done here, in a few dozen lines, because a family is a small layered
graph (a few images, a few levels): a layout library would cost more than it saves, and
graphviz is a program users may not have. The page is rendered by a Jinja2 template with
autoescaping on, so an image name or a smoke test's output cannot inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from lowbuild.run.report import human_bytes

NODE_W, NODE_H, COL_GAP, ROW_GAP = 170, 34, 60, 14
LABEL_W, BAR_AREA_W, ROW_H = 150, 760, 24
STATE_CLASSES = ("built", "up-to-date", "pulled", "failed", "blocked", "skipped", "base", "image")


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str
    state: str  # one of STATE_CLASSES ("base": from outside the family; "image": no run)
    parents: tuple[str, ...]
    title: str = ""


def family_nodes(images: Sequence[Mapping[str, Any]]) -> list[GraphNode]:
    """Graph nodes for a run's images (state from the run) and the images they stand on
    from outside the run: external bases, and family parents the run did not include."""
    nodes: dict[str, GraphNode] = {}
    names = {image["name"] for image in images}
    for image in images:
        for base in image["bases"]:
            nodes.setdefault(base, GraphNode(base, base, "base", (), f"{base}: external base"))
        for parent in image["parents"]:
            if parent not in names:
                title = f"{parent}: not part of this run"
                nodes.setdefault(parent, GraphNode(parent, parent, "image", (), title))
    for image in images:
        state = image.get("state") or "image"
        parents = tuple(image["parents"]) + tuple(
            b for b in image["bases"] if b not in image["parents"]
        )
        title = f"{image['name']}: {state}"
        if image.get("reason"):
            title += f" ({image['reason']})"
        nodes[image["name"]] = GraphNode(image["name"], image["name"], state, parents, title)
    return list(nodes.values())


def graph_svg(nodes: Sequence[GraphNode]) -> Markup:
    """A left-to-right layered drawing: each node one column right of its deepest
    parent; within a column, nodes ordered by their parents' rows (fewer crossings)."""
    by_id = {node.id: node for node in nodes}
    depth: dict[str, int] = {}

    def depth_of(node_id: str, seen: frozenset[str] = frozenset()) -> int:
        if node_id not in depth:
            parents = [p for p in by_id[node_id].parents if p in by_id and p not in seen]
            depth[node_id] = 1 + max((depth_of(p, seen | {node_id}) for p in parents), default=-1)
        return depth[node_id]

    columns: dict[int, list[str]] = {}
    for node in nodes:
        columns.setdefault(depth_of(node.id), []).append(node.id)
    row: dict[str, float] = {}
    for column in sorted(columns):
        ids = columns[column]

        def weight(node_id: str) -> tuple[float, str]:
            rows = [row[p] for p in by_id[node_id].parents if p in row]
            return (sum(rows) / len(rows) if rows else -1.0, node_id)

        ids.sort(key=weight)
        for index, node_id in enumerate(ids):
            row[node_id] = index
    height = max((len(ids) for ids in columns.values()), default=1)
    width = len(columns) * (NODE_W + COL_GAP) - COL_GAP + 20
    total_h = height * (NODE_H + ROW_GAP) + 10

    def at(node_id: str) -> tuple[float, float]:
        return 10 + depth[node_id] * (NODE_W + COL_GAP), 5 + row[node_id] * (NODE_H + ROW_GAP)

    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{total_h}" viewBox="0 0 {width} {total_h}" role="img" '
        'aria-label="the family graph">'
    ]
    for node in nodes:
        x1, y1 = at(node.id)
        for parent in node.parents:
            if parent not in by_id:
                continue
            x0, y0 = at(parent)
            sx, sy, ex, ey = x0 + NODE_W, y0 + NODE_H / 2, x1, y1 + NODE_H / 2
            mid = (sx + ex) / 2
            parts.append(
                f'<path class="edge" d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} '
                f'{mid:.0f},{ey:.0f} {ex:.0f},{ey:.0f}"/>'
            )
    for node in nodes:
        x, y = at(node.id)
        label = node.label if len(node.label) <= 24 else node.label[:22] + "…"
        parts.append(
            f'<g class="node state-{escape(node.state)}" data-node="{escape(node.id)}" '
            f'data-state="{escape(node.state)}"><title>{escape(node.title or node.id)}</title>'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + NODE_H / 2 + 4:.0f}">{escape(label)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _tick_step(seconds: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if seconds / step <= 10:
            return step
    return 7200.0


def timeline_svg(data: Mapping[str, Any]) -> Markup:
    """A Gantt chart: a row per image that ran (its build span, the phases inside it, its
    smoke test after it), the run's own phases on top, the critical path outlined."""
    images = [i for i in data["images"] if i["start"] is not None]
    tests = [i["test"] for i in data["images"] if i["test"] and i["test"]["start"] is not None]
    ends = [i["end"] for i in images] + [t["end"] for t in tests]
    ends += [p["start"] + p["duration"] for p in data["phases"]]
    span = float(max([float(data["duration"]), *ends, 0.001]))
    scale = BAR_AREA_W / span

    def x(t: float) -> float:
        return LABEL_W + t * scale

    rows = 1 + len(images)
    height = 30 + rows * ROW_H
    width = LABEL_W + BAR_AREA_W + 20
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="the run\'s timeline">'
    ]
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        parts.append(
            f'<line class="tick" x1="{x(tick):.1f}" y1="18" x2="{x(tick):.1f}" y2="{height}"/>'
            f'<text class="tick-label" x="{x(tick):.1f}" y="12">{tick:g}s</text>'
        )
        tick += step
    y = 22
    parts.append(f'<text class="row-label" x="4" y="{y + 15}">run</text>')
    for phase in data["phases"]:
        w = max(phase["duration"] * scale, 1)
        parts.append(
            f'<rect class="phase" x="{x(phase["start"]):.1f}" y="{y + 3}" width="{w:.1f}" '
            f'height="{ROW_H - 8}"><title>{escape(phase["name"])}: '
            f"{phase['duration']:.2f} s</title></rect>"
        )
        if w > 40:
            parts.append(
                f'<text class="phase-label" x="{x(phase["start"]) + 3:.1f}" y="{y + 15}">'
                f"{escape(phase['name'])}</text>"
            )
    for image in images:
        y += ROW_H
        classes = f"bar state-{image['state']}" + (" critical" if image["critical"] else "")
        length = image["end"] - image["start"]
        title = f"{image['name']}: {image['state']}, {length:.2f} s"
        if image["reason"]:
            title += f" ({image['reason']})"
        parts.append(
            f'<text class="row-label" x="4" y="{y + 15}">{escape(image["name"])}</text>'
            f'<rect class="{escape(classes)}" data-image="{escape(image["name"])}" '
            f'data-state="{escape(image["state"] or "")}" x="{x(image["start"]):.1f}" '
            f'y="{y + 2}" width="{max(length * scale, 1.5):.1f}" height="{ROW_H - 6}">'
            f"<title>{escape(title)}</title></rect>"
        )
        for step_ in image["steps"]:
            parts.append(
                f'<rect class="step" x="{x(step_["start"]):.1f}" y="{y + ROW_H - 8}" '
                f'width="{max(step_["duration"] * scale, 1):.1f}" height="3">'
                f"<title>{escape(step_['name'])}: {step_['duration']:.2f} s</title></rect>"
            )
        test = image["test"]
        if test and test["start"] is not None:
            verdict = "pass" if test["passed"] else "fail"
            parts.append(
                f'<rect class="testbar {verdict}" x="{x(test["start"]):.1f}" y="{y + 6}" '
                f'width="{max((test["end"] - test["start"]) * scale, 1.5):.1f}" '
                f'height="{ROW_H - 14}"><title>smoke test of {escape(image["name"])}: '
                f"{verdict}, {test['seconds']:.2f} s</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("lowbuild", "run/templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = lambda n, signed=False: human_bytes(n, signed=signed)
    env.filters["seconds"] = lambda s: "—" if s is None else f"{s:.2f} s"
    return env


def render_report(data: Mapping[str, Any]) -> str:
    """The run's report page."""
    nodes = family_nodes(data["images"])
    template = _environment().get_template("report.html.j2")
    return str(
        template.render(
            data=data,
            graph=graph_svg(nodes),
            timeline=timeline_svg(data),
            states=[s for s in STATE_CLASSES if any(n.state == s for n in nodes)],
        )
    )


def render_graph_page(title: str, nodes: Sequence[GraphNode]) -> str:
    """`lowbuild graph --format html`: the family graph alone, drawn as in the report."""
    template = _environment().get_template("graph.html.j2")
    states = [s for s in STATE_CLASSES if any(n.state == s for n in nodes)]
    return str(template.render(title=title, graph=graph_svg(nodes), states=states))
