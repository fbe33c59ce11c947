"""Inline SVG charts of the model page: a signal's score against its threshold, and the 2-D projection.

Every chart is an ``<svg role="img">`` labelled by its ``<title>`` and ``<desc>`` (what a screen reader
reads: the numbers that matter, in words). Coordinates are formatted numbers; text goes through ``esc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..monitor.page_view import Projection
from .markup import esc, is_number, num

BAND_NAMES = ("inside", "edge", "outside")  # current points by percentile band of the reference's scores


def _log_y(score: float) -> float:
    return math.log10(1.0 + max(score, 0.0))


def score_chart(uid: str, signal: str, events: Sequence[int], times: Sequence[float | None],
                scores: Sequence[float | None], drift: Sequence[bool], width: int = 420, height: int = 120) -> str:
    """Score (log scale) per history point with the threshold (1.0) as a dashed line; drifted points red."""
    pts = [(i, float(s)) for i, s in enumerate(scores) if s is not None and is_number(s)]
    title = f"{signal}: score against threshold over the last {len(scores)} history points"
    if not pts:
        return (f'<svg class="chart" role="img" aria-labelledby="{uid}-t {uid}-d" width="{width}" height="40">'
                f'<title id="{uid}-t">{esc(title)}</title><desc id="{uid}-d">No score yet.</desc>'
                f'<text x="4" y="24">no score yet</text></svg>')
    left, right, top, bottom = 34, 8, 8, 20
    top_score = max(2.0, max(s for _, s in pts))
    ymax = _log_y(top_score)
    n = max(len(scores) - 1, 1)

    def x(i: int) -> float:
        return left + (width - left - right) * i / n

    def y(s: float) -> float:
        return top + (height - top - bottom) * (1.0 - _log_y(s) / ymax)

    segs, cur = [], []
    for i, s in enumerate(scores):
        if s is not None and is_number(s):
            cur.append(f"{x(i):.1f},{y(float(s)):.1f}")
        elif cur:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    lines = "".join(f'<polyline class="score" points="{" ".join(sg)}"/>' for sg in segs)
    dots = "".join(f'<circle class="drift-pt" cx="{x(i):.1f}" cy="{y(s):.1f}" r="2.5"/>'
                   for i, s in pts if drift[i])
    ticks = "".join(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                    f'<text class="tick" x="{left - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{num(v, 0)}</text>'
                    for v in (0.0, 10.0, 100.0, 1000.0) if v <= top_score and v != 1.0)
    thr = (f'<line class="threshold" x1="{left}" x2="{width - right}" y1="{y(1.0):.1f}" y2="{y(1.0):.1f}"/>'
           f'<text class="tick thr" x="{left - 4}" y="{y(1.0) + 3:.1f}" text-anchor="end">1</text>')
    known = [t for t in times if is_number(t)]
    if len(known) >= 2:
        span = float(known[-1] or 0.0) - float(known[0] or 0.0)
        x_label = f"last {span:,.0f} s of event time" if span >= 1 else "event time"
    else:
        x_label = f"events {events[0]:,} to {events[-1]:,}" if events else ""
    flagged = sum(1 for d in drift if d)
    last = pts[-1][1]
    desc = (f"Latest score {num(last)} (threshold 1). Highest {num(max(s for _, s in pts))}. "
            f"Drift flagged in {flagged} of {len(scores)} points"
            + (", including the latest." if drift[-1] else "; not at the latest point."))
    return (f'<svg class="chart" role="img" aria-labelledby="{uid}-t {uid}-d" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}"><title id="{uid}-t">{esc(title)}</title>'
            f'<desc id="{uid}-d">{esc(desc)}</desc>{ticks}{thr}{lines}{dots}'
            f'<text class="tick" x="{width - right}" y="{height - 4}" text-anchor="end">{esc(x_label)} →</text>'
            f'</svg>')


def share_chart(uid: str, events: Sequence[int], share: Sequence[float], threshold: Sequence[float],
                expected: float, window: int, width: int = 420, height: int = 120) -> str:
    """The outlier share over the trailing ``window`` events per history point (solid), the share that
    alarms at that many items (dashed) and the share the reference predicts (dotted)."""
    title = f"embedding_outliers: share of events outside the reference over the last {window} events"
    if not share:
        return (f'<svg class="chart" role="img" aria-labelledby="{uid}-t {uid}-d" width="{width}" height="40">'
                f'<title id="{uid}-t">{esc(title)}</title><desc id="{uid}-d">No full window yet.</desc>'
                f'<text x="4" y="24">no full window yet</text></svg>')
    left, right, top, bottom = 40, 8, 8, 20
    ymax = max(max(share), max(threshold), expected) * 1.1 or 1.0
    n = max(len(share) - 1, 1)

    def x(i: int) -> float:
        return left + (width - left - right) * i / n

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1.0 - v / ymax)

    def line(cls: str, vals: Sequence[float]) -> str:
        return f'<polyline class="{cls}" points="{" ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vals))}"/>'

    above = [i for i, (v, t) in enumerate(zip(share, threshold, strict=True)) if v >= t > 0]
    dots = "".join(f'<circle class="drift-pt" cx="{x(i):.1f}" cy="{y(share[i]):.1f}" r="2.5"/>' for i in above)
    ticks = "".join(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                    f'<text class="tick" x="{left - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{100 * v:.0f}%</text>'
                    for v in (0.0, ymax / 2, ymax / 1.1))
    exp = (f'<line class="expected" x1="{left}" x2="{width - right}" y1="{y(expected):.1f}" '
           f'y2="{y(expected):.1f}"/>')
    desc = (f"Latest share {100 * share[-1]:.1f}% against {100 * threshold[-1]:.1f}% that alarms and "
            f"{100 * expected:.2f}% the reference predicts; at or above the alarming share in {len(above)} of "
            f"{len(share)} points" + (", including the latest." if above and above[-1] == len(share) - 1 else "."))
    return (f'<svg class="chart" role="img" aria-labelledby="{uid}-t {uid}-d" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}"><title id="{uid}-t">{esc(title)}</title>'
            f'<desc id="{uid}-d">{esc(desc)}</desc>{ticks}{exp}{line("threshold", threshold)}'
            f'{line("score", share)}{dots}<text class="tick" x="{width - right}" y="{height - 4}" '
            f'text-anchor="end">events {events[0]:,} to {events[-1]:,} →</text></svg>')


def band(percentile: float | None, bands: Sequence[float]) -> str:
    """Which band of the reference's out-of-reference scores a current point falls in."""
    if percentile is None or not is_number(percentile):
        return "inside"
    return BAND_NAMES[sum(1 for b in bands if percentile >= b)]


def _shape(cls: str, cx: float, cy: float, shape: str, extra: str, tip: str) -> str:
    if shape == "circle":
        body = f'<circle class="{cls}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.2"{extra}>'
        end = "</circle>"
    elif shape == "diamond":
        body = (f'<path class="{cls}" d="M{cx:.1f},{cy - 4.5:.1f}l4.5,4.5l-4.5,4.5l-4.5,-4.5z"{extra}>')
        end = "</path>"
    else:  # triangle
        body = f'<path class="{cls}" d="M{cx:.1f},{cy - 5:.1f}l5,8.5h-10z"{extra}>'
        end = "</path>"
    return f"{body}<title>{esc(tip)}</title>{end}"


def projection_chart(proj: Projection, selected: str | None = None, width: int = 640,
                     height: int = 460) -> tuple[str, dict[str, int]]:
    """Scatter of reference (grey dots) and current points (blue circle inside, orange diamond at the
    edge, red triangle outside the reference), with the selected example ringed and linked to its
    nearest reference points. Returns the SVG and the number of current points per band."""
    ref, cur = proj.reference, proj.current
    bands = proj.percentile_bands or (0.9, 0.99)
    xs = [float(v) for v in ref.x + cur.x]
    ys = [float(v) for v in ref.y + cur.y]
    if not xs:
        return '<p class="muted">No embeddings to project yet.</p>', {}

    def spread(v: list[float]) -> tuple[float, float]:
        s = sorted(v)
        lo, hi = s[int(0.01 * (len(s) - 1))], s[int(0.99 * (len(s) - 1))]
        pad = 0.08 * (hi - lo or 1.0)
        return lo - pad, hi + pad

    (x0, x1), (y0, y1) = spread(xs), spread(ys)
    m = 24

    def px(v: float) -> float:
        return m + (width - 2 * m) * (min(max(v, x0), x1) - x0) / (x1 - x0)

    def py(v: float) -> float:
        return height - m - (height - 2 * m) * (min(max(v, y0), y1) - y0) / (y1 - y0)

    parts = []
    for i, (a, b) in enumerate(zip(ref.x, ref.y, strict=True)):
        tip = f"reference: {ref.text[i]}" if i < len(ref.text) and ref.text[i] else "reference"
        parts.append(_shape("pt-ref", px(a), py(b), "circle", "", tip))
    counts = dict.fromkeys(BAND_NAMES, 0)
    sel_xy: tuple[float, float] | None = None
    sel_near: tuple[int, ...] = ()
    for i, (a, b) in enumerate(zip(cur.x, cur.y, strict=True)):
        bd = band(cur.percentile[i], bands)
        counts[bd] += 1
        shape = {"inside": "circle", "edge": "diamond", "outside": "triangle"}[bd]
        eid = cur.event_id[i]
        tip = f"current ({bd} the reference, percentile {num(cur.percentile[i])}): {cur.text[i] or ''}"
        parts.append(_shape(f"pt-cur {bd}", px(a), py(b), shape, f' data-example="{esc(eid)}"', tip))
        if selected is not None and eid == selected:
            sel_xy, sel_near = (px(a), py(b)), cur.nearest[i]
    overlay = ""
    if sel_xy is not None:
        links = "".join(f'<line class="near-link" x1="{sel_xy[0]:.1f}" y1="{sel_xy[1]:.1f}" '
                        f'x2="{px(ref.x[j]):.1f}" y2="{py(ref.y[j]):.1f}"/>' for j in sel_near)
        overlay = f'{links}<circle class="selected" cx="{sel_xy[0]:.1f}" cy="{sel_xy[1]:.1f}" r="9"/>'
    n_ref, n_cur = len(ref.x), len(cur.x)
    plane = "a UMAP map of the reference" if proj.method == "umap" else "the first two principal components"
    desc = (f"{n_ref} reference points and {n_cur} recent points on {plane}. "
            f"Of the recent points, {counts['inside']} lie inside the reference (below its "
            f"{100 * bands[0]:.0f}th percentile of out-of-reference scores), {counts['edge']} at its edge and "
            f"{counts['outside']} outside it (above the {100 * bands[-1]:.0f}th percentile).")
    axes = (f'<text class="tick" x="{width / 2:.0f}" y="{height - 6}" text-anchor="middle">'
            f'{esc(proj.axes[0])}</text><text class="tick" x="10" y="{height / 2:.0f}" '
            f'transform="rotate(-90 10 {height / 2:.0f})" text-anchor="middle">{esc(proj.axes[1])}</text>')
    return (f'<svg id="projection" class="projection" role="img" aria-labelledby="proj-t proj-d" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" data-reference-points="{n_ref}" '
            f'data-current-points="{n_cur}"><title id="proj-t">Projection of reference and recent embeddings'
            f'</title><desc id="proj-d">{esc(desc)}</desc>'
            f'<rect class="frame" x="{m}" y="{m}" width="{width - 2 * m}" height="{height - 2 * m}"/>'
            f'{axes}{"".join(parts)}{overlay}</svg>'), counts
