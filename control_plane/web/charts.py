"""Pictures drawn on the server as SVG: a metric across versions, a lineage graph, and
who held production when. No script and nothing fetched: they render as the page loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from markupsafe import escape

from control_plane.web.views import parse_time

MAX_POINTS = 400  # a metric over 10,000 versions is drawn from an even sample of them


def metric_chart(points: Sequence[tuple[int, float, str]], metric: str) -> str:
    """(version number, value, label) in version order -> a line chart."""
    if not points:
        return f'<p class="muted">No version records {escape(metric)}.</p>'
    if len(points) > MAX_POINTS:
        step = len(points) / MAX_POINTS
        points = [points[int(i * step)] for i in range(MAX_POINTS - 1)] + [points[-1]]
    width, height, pad = 640, 220, 36
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1

    def px(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def py(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
    dots = "".join(
        f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3"><title>{escape(label)}: '
        f"{y:g}</title></circle>"
        for x, y, label in points
        if len(points) <= 100
    )
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric)} across versions">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'class="axis"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" class="axis"/>'
        f'<text x="{pad - 4}" y="{py(y1) + 4:.1f}" text-anchor="end">{y1:.4g}</text>'
        f'<text x="{pad - 4}" y="{py(y0) + 4:.1f}" text-anchor="end">{y0:.4g}</text>'
        f'<text x="{pad}" y="{height - pad + 16}">v{x0}</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end">v{x1}</text>'
        f'<polyline points="{line}" class="series"/>{dots}</svg>'
    )


def lineage_graph(tree: dict[str, Any], labels: dict[tuple[str, str], str]) -> str:
    """Ancestors left, the version in the middle, descendants right; an arrow from each
    parent to its child."""
    columns: dict[int, list[tuple[str, str]]] = {}
    edges: list[tuple[tuple[str, str], tuple[str, str]]] = []
    me = (tree["model"], tree["commit_hash"])
    columns[0] = [me]

    def up(node: tuple[str, str], parents: list[dict[str, Any]], depth: int) -> None:
        for parent in parents:
            key = (parent["model"], parent["commit_hash"])
            if key not in columns.setdefault(-depth, []):
                columns[-depth].append(key)
            edges.append((key, node))
            up(key, parent.get("parents", []), depth + 1)

    def down(node: tuple[str, str], children: list[dict[str, Any]], depth: int) -> None:
        for child in children:
            key = (child["model"], child["commit_hash"])
            if key not in columns.setdefault(depth, []):
                columns[depth].append(key)
            edges.append((node, key))
            down(key, child.get("children", []), depth + 1)

    up(me, tree.get("ancestors", []), 1)
    down(me, tree.get("descendants", []), 1)
    order = sorted(columns)
    box_w, box_h, gap_x, gap_y = 170, 34, 60, 16
    rows = max(len(nodes) for nodes in columns.values())
    width = len(order) * (box_w + gap_x) - gap_x + 20
    height = rows * (box_h + gap_y) - gap_y + 20
    where: dict[tuple[str, str], tuple[float, float]] = {}
    boxes = []
    for column, depth in enumerate(order):
        for row, key in enumerate(columns[depth]):
            x, y = 10 + column * (box_w + gap_x), 10 + row * (box_h + gap_y)
            where[key] = (x, y)
            label = labels.get(key, f"{key[0]} {key[1][:7]}")
            css = "node self" if key == me else "node"
            boxes.append(
                f'<g class="{css}"><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6"/>'
                f'<text x="{x + box_w / 2}" y="{y + 21}" text-anchor="middle">'
                f"{escape(label)}</text></g>"
            )
    lines = [
        f'<line x1="{where[a][0] + box_w}" y1="{where[a][1] + box_h / 2}" '
        f'x2="{where[b][0]}" y2="{where[b][1] + box_h / 2}" class="edge" marker-end="url(#arrow)"/>'
        for a, b in edges
        if a in where and b in where
    ]
    marker = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    )
    return (
        f'<svg class="lineage" viewBox="0 0 {width} {height}" role="img" aria-label="lineage">'
        f"{marker}{''.join(lines)}{''.join(boxes)}</svg>"
    )


def timeline(spans: Sequence[dict[str, Any]], now: datetime) -> str:
    """One bar per span of production, on one time axis from the first to now."""
    dated: list[tuple[dict[str, Any], datetime, datetime]] = []
    for span in spans:
        begin = parse_time(span["from"])
        if begin is not None:
            dated.append((span, begin, parse_time(span["until"]) or now))
    if not dated:
        return '<p class="muted">No version has been in production.</p>'
    start = min(begin for _, begin, _ in dated)
    total = max((now - start).total_seconds(), 1.0)
    width, bar, pad = 640, 22, 4
    height = len(dated) * (bar + pad) + 20
    rows = []
    for i, (span, begin, end) in enumerate(dated):
        x = 130 + (begin - start).total_seconds() / total * (width - 140)
        w = max(2.0, (end - begin).total_seconds() / total * (width - 140))
        y = i * (bar + pad)
        rows.append(
            f'<text x="0" y="{y + 15}">{escape(span["label"])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" class="span">'
            f"<title>{escape(span['label'])}: {escape(span['from'])} to "
            f"{escape(span['until'] or 'now')}</title></rect>"
        )
    return (
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="production over time">{"".join(rows)}'
        f'<text x="130" y="{height - 4}">{start:%Y-%m-%d %H:%M}</text>'
        f'<text x="{width}" y="{height - 4}" text-anchor="end">now</text></svg>'
    )
