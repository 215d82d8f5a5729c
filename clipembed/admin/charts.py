"""Server-rendered SVG charts: the overview's 24-hour series need no JavaScript and no CDN.

Pure functions of numbers; the only text they print is escaped. A missing value (no sample in
that bucket) breaks the line instead of being drawn as zero.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

WIDTH = 560
HEIGHT = 120
PAD_LEFT = 52
PAD_BOTTOM = 18
PAD_TOP = 8


def nice_max(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    if power == 0:  # a subnormal value: 10 ** -324 underflows to 0
        return 1.0
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def compact(value: float) -> str:
    """12, 3.4k, 1.2M: short axis labels."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.1f}".rstrip("0").rstrip(".") if value % 1 else f"{int(value)}"


def line_chart(
    values: Sequence[float | None],
    *,
    title: str,
    unit: str = "",
    labels: tuple[str, str] = ("24 h ago", "now"),
    css_class: str = "series",
) -> str:
    """One series as an SVG line with a filled area, its axis top and its time span."""
    width, height = WIDTH, HEIGHT
    plot_w = width - PAD_LEFT - 4
    plot_h = height - PAD_TOP - PAD_BOTTOM
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = nice_max(max(finite, default=0.0))
    n = max(len(values) - 1, 1)

    def x(i: int) -> float:
        return PAD_LEFT + plot_w * i / n

    def y(v: float) -> float:
        return PAD_TOP + plot_h * (1 - min(max(v, 0.0), top) / top)

    segments: list[list[tuple[float, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append((x(i), y(v)))
    paths = []
    for seg in segments:
        if not seg:
            continue
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in seg)
        base = PAD_TOP + plot_h
        area = f"{seg[0][0]:.1f},{base:.1f} {line} {seg[-1][0]:.1f},{base:.1f}"
        paths.append(f'<polygon class="area" points="{area}"/>')
        paths.append(f'<polyline class="line" points="{line}"/>')
    if not paths:
        paths.append(
            f'<text class="empty" x="{PAD_LEFT + plot_w / 2:.0f}" y="{PAD_TOP + plot_h / 2:.0f}"'
            ' text-anchor="middle">no data yet</text>'
        )
    t = html.escape(title)
    u = html.escape(unit)
    base_y = PAD_TOP + plot_h
    return (
        f'<svg class="chart {html.escape(css_class)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{t}">'
        f"<title>{t}</title>"
        f'<line class="axis" x1="{PAD_LEFT}" y1="{base_y}" x2="{width - 4}" y2="{base_y}"/>'
        f'<line class="grid" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{width - 4}" y2="{PAD_TOP}"/>'
        f'<text class="tick" x="{PAD_LEFT - 6}" y="{PAD_TOP + 4}" text-anchor="end">'
        f"{compact(top)}{(' ' + u) if u else ''}</text>"
        f'<text class="tick" x="{PAD_LEFT - 6}" y="{base_y}" text-anchor="end">0</text>'
        f'<text class="tick" x="{PAD_LEFT}" y="{height - 4}">{html.escape(labels[0])}</text>'
        f'<text class="tick" x="{width - 4}" y="{height - 4}" text-anchor="end">'
        f"{html.escape(labels[1])}</text>" + "".join(paths) + "</svg>"
    )
