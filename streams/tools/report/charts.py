"""Inline SVG charts for the report: stacked bars over time, and 100 % bars of a mix.

Self-contained markup (no script, no external font or stylesheet); every bar segment carries
a `<title>` with its exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif'"


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    color: str


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if step * power >= value and (step * power).is_integer():
            return math.ceil(step * power)
    return math.ceil(10.0 * power)


def _legend(series: Sequence[Series], x: float, y: float) -> list[str]:
    out = []
    for s in series:
        out.append(f"<rect x='{x:.1f}' y='{y - 9:.1f}' width='10' height='10' fill='{s.color}'/>")
        out.append(f"<text x='{x + 14:.1f}' y='{y:.1f}'>{escape(s.label)}</text>")
        x += 22 + 7 * len(s.label)
    return out


def stacked_bars(
    labels: Sequence[str],
    values: Sequence[Mapping[str, int]],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 960,
    height: int = 240,
) -> str:
    """One stacked bar per label (a time bucket), one segment per series."""
    left, right, top, bottom = 52.0, 40.0, 30.0, 34.0
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(v.get(s.key, 0) for s in series) for v in values]
    ymax = nice_ceiling(max(totals, default=0))
    n = max(len(labels), 1)
    slot = plot_w / n
    bar = max(slot * 0.78, 1.0)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='{escape(title, quote=True)}' class='chart' {FONT} font-size='11' "
        f"fill='#333'>",
        f"<title>{escape(title)}</title>",
    ]
    parts += _legend(series, left, 14)
    for i in range(5):
        value = ymax * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' "
            f"stroke='#ddd' stroke-width='1'/>"
        )
        text = f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
        parts.append(f"<text x='{left - 6}' y='{y + 4:.1f}' text-anchor='end'>{text}</text>")
    stride = max(1, math.ceil(len(labels) / 12))
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = left + slot * i + (slot - bar) / 2
        y = top + plot_h
        for s in series:
            count = v.get(s.key, 0)
            if not count:
                continue
            h = plot_h * count / ymax
            y -= h
            parts.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{bar:.1f}' height='{h:.1f}' "
                f"fill='{s.color}'><title>{escape(label)}: {count:,} {escape(s.label)}"
                f"</title></rect>"
            )
        if i % stride == 0:
            parts.append(
                f"<text x='{x + bar / 2:.1f}' y='{top + plot_h + 16:.1f}' "
                f"text-anchor='middle'>{escape(label)}</text>"
            )
    parts.append(
        f"<line x1='{left}' x2='{width - right}' y1='{top + plot_h}' y2='{top + plot_h}' "
        f"stroke='#888' stroke-width='1'/>"
    )
    if not any(totals):
        parts.append(
            f"<text x='{left + plot_w / 2:.1f}' y='{top + plot_h / 2:.1f}' text-anchor='middle' "
            f"fill='#888'>nothing released in this period</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def share_bars(
    rows: Sequence[tuple[str, Mapping[str, float]]],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 960,
) -> str:
    """One 100 % bar per row (e.g. a policy version), one segment per series, in percent."""
    left, right, top, row_h = 12.0, 12.0, 30.0, 46.0
    plot_w = width - left - right
    height = int(top + row_h * max(len(rows), 1) + 8)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='{escape(title, quote=True)}' class='chart' {FONT} font-size='11' "
        f"fill='#333'>",
        f"<title>{escape(title)}</title>",
    ]
    parts += _legend(series, left, 14)
    for i, (label, mix) in enumerate(rows):
        y = top + row_h * i
        parts.append(f"<text x='{left}' y='{y + 12:.1f}'>{escape(label)}</text>")
        x = left
        total = sum(mix.get(s.key, 0.0) for s in series)
        if not total:
            parts.append(
                f"<rect x='{left}' y='{y + 18:.1f}' width='{plot_w:.1f}' height='18' "
                f"fill='#eee'><title>{escape(label)}: no cross-border fields</title></rect>"
            )
            continue
        for s in series:
            pct = mix.get(s.key, 0.0)
            if not pct:
                continue
            w = plot_w * pct / total
            parts.append(
                f"<rect x='{x:.1f}' y='{y + 18:.1f}' width='{w:.1f}' height='18' "
                f"fill='{s.color}'><title>{escape(label)}: {pct:.1f} % {escape(s.label)}"
                f"</title></rect>"
            )
            if w > 44:
                parts.append(
                    f"<text x='{x + w / 2:.1f}' y='{y + 31:.1f}' text-anchor='middle' "
                    f"fill='#fff'>{pct:.1f} %</text>"
                )
            x += w
    parts.append("</svg>")
    return "".join(parts)
