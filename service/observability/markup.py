"""HTML building blocks for the pages: escaping, number formats, entity highlighting. No state.

Every string that reaches a page from an event, a label or a model name goes through ``esc`` (text and
attribute values) or ``url_segment``/``query`` (URLs). Numbers are formatted here, never interpolated
raw, so a value from a report can never open a tag.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

DASH = "—"


def esc(value: Any) -> str:
    """``str(value)`` HTML-escaped for text and double- or single-quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def url_segment(value: Any) -> str:
    """A path segment: every reserved character percent-encoded (``/`` included)."""
    return quote(str(value), safe="")


def query(params: Mapping[str, Any]) -> str:
    """``?a=1&b=2`` from the non-None params (empty string when none)."""
    kept = {k: str(v) for k, v in params.items() if v is not None}
    return "?" + urlencode(kept) if kept else ""


def model_href(model: Any, version: Any = None, **params: Any) -> str:
    return f"/models/{url_segment(model)}{query({'version': version, **params})}"


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def num(x: Any, digits: int = 2) -> str:
    """A finite number with ``digits`` decimals (thousands separated); ``—`` otherwise."""
    if not is_number(x):
        return DASH
    if isinstance(x, int):
        return f"{x:,}"
    return f"{float(x):,.{digits}f}"


def pct(x: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage; ``—`` when unknown."""
    return f"{100 * float(x):.{digits}f} %" if is_number(x) else DASH


def signed_pp(x: Any) -> str:
    """A change of a share, in percentage points with its sign."""
    return f"{100 * float(x):+.1f} pp" if is_number(x) else DASH


def utc(t: Any) -> str:
    """Epoch seconds as ``2026-12-02 05:44:23 UTC``; ``—`` when unknown."""
    if not is_number(t):
        return DASH
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))


def age(t: Any, now: float) -> str:
    """How long before ``now`` the epoch time ``t`` was, in words (``—`` when unknown)."""
    if not is_number(t):
        return DASH
    s = now - float(t)
    if s < 0:
        return "in the future (clock skew?)"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def highlight(text: str | None, entities: Iterable[Mapping[str, Any]], weakest: bool = False) -> str:
    """The escaped text with each entity span in ``<mark>`` followed by its label and score.

    Spans without valid offsets, or overlapping an earlier span, are listed after the text instead.
    With ``weakest`` the lowest-scored entity is marked ``class="ent weakest"``.
    """
    ents = [dict(e) for e in entities]
    if text is None:  # not sent, or not kept (pages.keep_texts: false): the entities' labels and scores only
        listed = " ".join(f'<mark class="ent"><span class="ent-label">{esc(e.get("label"))} {num(e.get("score"))}'
                          f'</span></mark>' for e in ents)
        return f'<span class="muted">(no text)</span> {listed}' if listed else '<span class="muted">(no text)</span>'

    low = min((e for e in ents if is_number(e.get("score"))), key=lambda e: e["score"], default=None)
    spans, rest = [], []
    for e in ents:
        s, t = e.get("start"), e.get("end")
        if isinstance(s, int) and isinstance(t, int) and 0 <= s <= t <= len(text):
            spans.append(e)
        else:
            rest.append(e)
    spans.sort(key=lambda e: (e["start"], e["end"]))
    out, pos = [], 0
    for e in spans:
        if e["start"] < pos:
            rest.append(e)
            continue
        cls = "ent weakest" if weakest and e is low else "ent"
        out.append(esc(text[pos:e["start"]]))
        out.append(f'<mark class="{cls}">{esc(text[e["start"]:e["end"]])}'
                   f'<span class="ent-label"> {esc(e.get("label"))} {num(e.get("score"))}</span></mark>')
        pos = e["end"]
    out.append(esc(text[pos:]))
    if rest:
        listed = ", ".join(f'{esc(e.get("label"))} {num(e.get("score"))}' for e in rest)
        out.append(f' <span class="muted">(entities without usable offsets: {listed})</span>')
    return "".join(out)
