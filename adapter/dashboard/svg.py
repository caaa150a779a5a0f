"""Server-rendered inline SVG charts: presentation attributes only (no script, no style
element, no external resource), so the page needs nothing beyond its strict CSP."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 380, 170
LEFT, RIGHT, TOP, BOTTOM = 44, 24, 12, 28
LINE, TARGET, GRID, TEXT = "#005eb8", "#d5281b", "#d8dde0", "#425563"
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.0f}%" if percent else (f"{value:.1f}" if value % 1 else f"{value:.0f}")


def month_label(month: str) -> str:
    """`2026-10` -> `Oct 26`."""
    return f"{MONTHS[int(month[5:7]) - 1]} {month[2:4]}"


def line_chart(points: list[tuple[str, float | None]], target: float | None, percent: bool, title: str) -> str:
    """A line over the months (gaps where a month had no one to count), the target dashed."""
    values = [v for _, v in points if v is not None]
    top = 1.0 if percent else 5.0 * math.ceil(max([*values, target or 0, 1]) * 1.1 / 5)  # 0, half, top: round
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(points) - 1, 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(max(v / top, 0), 1))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        gy = y(top * frac)
        out.append(f'<line x1="{LEFT}" y1="{gy:.1f}" x2="{WIDTH - RIGHT}" y2="{gy:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{LEFT - 4}" y="{gy + 4:.1f}" font-size="10" text-anchor="end" '
                   f'fill="{TEXT}">{_fmt(top * frac, percent)}</text>')
    for i, (label, _) in enumerate(points):
        if (len(points) - 1 - i) % 2 == 0:  # every other month, ending with the last
            out.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" font-size="9" text-anchor="middle" '
                       f'fill="{TEXT}">{escape(month_label(label))}</text>')
    if target is not None:
        ty = y(target)
        out.append(f'<line class="target" x1="{LEFT}" y1="{ty:.1f}" x2="{WIDTH - RIGHT}" y2="{ty:.1f}" '
                   f'stroke="{TARGET}" stroke-dasharray="5 4" stroke-width="1.5"/>')
    run: list[str] = []
    for i, (_, v) in enumerate(points + [("", None)]):
        if v is not None:
            run.append(f"{x(i):.1f},{y(v):.1f}")
        elif run:
            if len(run) > 1:
                out.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{LINE}" stroke-width="2"/>')
            run = []
    for i, (label, v) in enumerate(points):
        if v is not None:
            out.append(f'<circle class="point" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{LINE}">'
                       f'<title>{escape(month_label(label))}: {_fmt(v, percent) if percent else v}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: list[tuple[str, int]], title: str) -> str:
    """Horizontal bars: how many late IHAs each segment caused."""
    row, label_w, width = 22, 110, WIDTH
    height = TOP + row * max(len(items), 1) + 8
    top = max([n for _, n in items] + [1])
    span = width - label_w - 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i, (label, n) in enumerate(items):
        y = TOP + i * row
        w = span * n / top
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end" '
                   f'fill="{TEXT}">{escape(label)}</text>')
        out.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="{LINE}">'
                   f'<title>{escape(label)}: {n}</title></rect>')
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="11" fill="{TEXT}">{n}</text>')
    out.append("</svg>")
    return "".join(out)
