"""The HTML pages of ``nlpmon run``: ``/`` (every model at a glance) and ``/models/<model>`` (what drifted).

The model page renders the typed page view (``nlpmon.monitor.page_view.ModelPage``, whose ``to_json()`` is
the JSON API; a report's JSON, e.g. a member's, is read with ``ModelPage.from_json``), with inline SVG and one
small bundled script (``static/nlpmon.js``) that swaps in a fresh ``<main>`` every few seconds. No CDN, no
external request. Landmarks (header, nav, main, footer), one ``<h1>``, section headings, table headers with ``scope``,
charts with ``<title>``/``<desc>``; state is always said in words, never by colour alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..monitor.page_view import (
    BinnedEvidence,
    BoundaryExample,
    CategoricalEvidence,
    ClusterEvidence,
    ConfidenceByLabel,
    EventShareEvidence,
    Evidence,
    Example,
    History,
    LabelShareEvidence,
    ModelPage,
    ModelsPage,
    ModelSummary,
    MonitoredBlocks,
    Neighbour,
    OutlierShareEvidence,
    Projection,
    SignalPage,
    SignalSummary,
    TagExample,
)
from ..monitor.signals import SIGNALS
from ..quality.report import CalibrationGapOverall, F1Drop, QualityReport
from .charts import projection_chart, score_chart, share_chart
from .markup import (
    DASH,
    age,
    esc,
    highlight,
    is_number,
    model_href,
    num,
    pct,
    query,
    signed_pp,
    url_segment,
    utc,
)
from .partial_match_page import partial_match_section
from .projection_note import projection_caption, projection_note

SIGNAL_MEANING = {s.name: s.meaning for s in SIGNALS}
LABEL_SIGNALS = ("entity_label", "prediction_label", "token_tag")


def layout(title: str, content: str, *, refresh_s: int, crumbs: Sequence[tuple[str, str]] = ()) -> str:
    """A whole page: head, header with breadcrumbs, the refresh control, ``<main id="content">``."""
    nav = " › ".join([f'<a href="{esc(h)}">{esc(t)}</a>' for h, t in crumbs])
    control = ("" if refresh_s <= 0 else
               f'<button type="button" id="refresh-toggle" aria-pressed="false">Pause auto-refresh</button> '
               f'<span id="refresh-status">Refreshes every {refresh_s} s.</span>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><link rel="stylesheet" href="/static/nlpmon.css"></head>'
            f'<body data-refresh="{refresh_s}" data-refreshed="0">'
            f'<a class="skip" href="#content">Skip to content</a>'
            f'<header><nav aria-label="Breadcrumb"><a href="/">nlpmon</a>{" › " + nav if nav else ""}</nav>'
            f'<div class="refresh">{control}</div>'
            f'<div id="announce" class="visually-hidden" aria-live="polite"></div></header>'
            f'{content}'
            f'<footer><p>nlpmon. Data: <a href="/api/models">/api/models</a> (JSON), '
            f'<a href="/metrics">/metrics</a> (Prometheus).</p></footer>'
            f'<script src="/static/nlpmon.js" defer></script></body></html>')


def error_page(status: int, message: str, links: Sequence[tuple[str, str]] = ()) -> str:
    """A page for 400/404: the one-line message and where to go instead."""
    items = "".join(f'<li><a href="{esc(h)}">{esc(t)}</a></li>' for h, t in links)
    content = (f'<main id="content"><h1>{status}: {esc(message)}</h1>'
               + (f'<ul>{items}</ul>' if items else "") + '<p><a href="/">All models</a></p></main>')
    return layout(f"{status} — nlpmon", content, refresh_s=0)


# -- overview -------------------------------------------------------------------------------------------
#: Drifting model versions named in the overview's banner; the others are counted.
BANNER_MODELS = 20


def overview_page(page: ModelsPage | Sequence[ModelSummary], now: float, refresh_s: int) -> str:
    """The overview: one page of model summaries (``http.page_of_models``: drifting first; a plain list of
    summaries is one page of all of them), its banner over every model, and links to the other pages when
    some were left out."""
    if not isinstance(page, ModelsPage):
        page = ModelsPage.of(page)
    summaries = page.models
    total, n_drifting = page.total, page.drifting
    signals = [s.name for s in SIGNALS if any(s.name in m.signals for m in summaries)]
    drifting = [m for m in summaries if m.drift][:BANNER_MODELS]
    if not total:
        banner = '<p id="drift-summary" class="banner">No model has sent events yet.</p>'
    elif n_drifting:
        names = "; ".join(f'{esc(m.model)} {esc(m.model_version)} ({esc(", ".join(m.drifting_signals))})'
                          for m in drifting)
        more = f" and {n_drifting - len(drifting):,} more" if n_drifting > len(drifting) else ""
        banner = (f'<p id="drift-summary" class="banner drift"><strong>Drift:</strong> {n_drifting} of '
                  f'{total} model versions: {names}{more}.</p>')
    else:
        banner = f'<p id="drift-summary" class="banner ok">No drift in {total} model versions.</p>'
    banner += _pager(page)
    head = "".join(f'<th scope="col">{esc(s)}</th>' for s in signals)
    rows = []
    for m in summaries:
        cells = "".join(_flag_cell(m.signals.get(s)) for s in signals)
        rate = None if m.throughput is None else m.throughput.events_per_second
        rows.append(
            f'<tr data-model="{esc(m.model)}" data-drift="{str(m.drift).lower()}">'
            f'<th scope="row"><a href="{esc(model_href(m.model, m.model_version))}">{esc(m.model)}</a></th>'
            f'<td>{esc(m.model_version)}</td><td>{esc(m.status.replace("_", " "))}</td>{cells}'
            f'<td class="num">{num(m.events.get("production"))}</td><td class="num">{num(rate, 1)}</td>'
            f'<td>{esc(utc(m.last_event_time))}<br><span class="muted">'
            f'{esc(age(m.last_event_time, now))}</span></td>'
            f'<td class="num">{pct(m.labelled_fraction)}</td></tr>')
    table = (f'<table class="models"><caption>Every model version, its drift flag per signal, traffic and '
             f'labelled fraction</caption><thead><tr><th scope="col">Model</th><th scope="col">Version</th>'
             f'<th scope="col">Status</th>{head}<th scope="col">Production events</th>'
             f'<th scope="col">Events/s (event time)</th><th scope="col">Last event</th>'
             f'<th scope="col">Labelled</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
             if summaries else "")
    content = f'<main id="content"><h1>Models</h1>{banner}{table}</main>'
    return layout("nlpmon — models", content, refresh_s=refresh_s)


def _pager(page: ModelsPage) -> str:
    """"Model versions 201-400 of 10,000" and links to the previous and next pages, when some are left out."""
    if not page.omitted:
        return ""
    offset, shown, total = page.offset, len(page.models), page.total
    step = page.limit or shown or 1
    links = []
    if offset > 0:
        links.append(f'<a href="/{esc(query({"offset": max(offset - step, 0)}))}">previous</a>')
    if offset + shown < total:
        links.append(f'<a href="/{esc(query({"offset": offset + shown}))}">next</a>')
    first = f"{offset + 1:,}-{offset + shown:,}" if shown else "none"
    return (f'<p id="pager" class="muted">Model versions {first} of {total:,} (drifting first; '
            f'{page.omitted:,} not on this page): {" · ".join(links)}</p>')


def _flag_cell(sig: SignalSummary | None) -> str:
    if sig is None:
        return f'<td class="flag na">{DASH}<span class="visually-hidden"> not available</span></td>'
    if sig.drift:
        return f'<td class="flag drift" data-drift="true">DRIFT <span class="muted">{num(sig.score)}</span></td>'
    return f'<td class="flag ok" data-drift="false">ok <span class="muted">{num(sig.score)}</span></td>'


# -- one model --------------------------------------------------------------------------------------------
def model_page(key: str, report: ModelPage | Mapping[str, Any], now: float, refresh_s: int,
               selected: str | None = None) -> str:
    """The page of one (model, version): its typed page view (``nlpmon.monitor.page_view``; a report's JSON
    is read with ``ModelPage.from_json``)."""
    view = report if isinstance(report, ModelPage) else ModelPage.from_json(report)
    model, version, m = view.model, view.model_version, view.monitored
    signals = view.signals
    drifting = view.drifting
    parts = [f'<h1>Model {esc(model)} <span class="muted">version {esc(version)}</span></h1>']
    if view.status != "monitoring":
        ref = view.reference
        parts.append(f'<p id="drift-summary" class="banner">Not monitoring yet: '
                     f'{esc(view.status.replace("_", " "))} ({num(ref.events)} of '
                     f'{num(ref.needed)} reference events).'
                     + (f' {esc(view.reference_error)}' if view.reference_error else "") + '</p>')
    elif drifting:
        parts.append(f'<p id="drift-summary" class="banner drift"><strong>Drift</strong> in '
                     f'{esc(", ".join(drifting))}: the current window no longer looks like the reference.</p>')
    else:
        parts.append('<p id="drift-summary" class="banner ok">No drift: every signal is below its threshold.</p>')
    if drifting:
        parts.append(_what_changed(view))
    parts.append(_facts(view, now))
    if m is not None and signals:
        parts.append(_signals_section(signals, m.history))
        parts.append(_labels_section(signals))
        parts.append(_partial_drift_section(signals, m.history))
        parts.append(_ner_shape_section(signals))
        parts.append(_confidence_section(m.confidence_by_label, signals))
    projection = None if m is None else m.projection
    if projection is not None or signals:
        parts.append(_projection_section(projection, selected, model, version))
    if selected is not None:
        parts.append(_selected_section(view, selected))
    if m is not None and signals:
        parts.append(_examples_section(view, m, model, version))
    if view.quality is not None:
        parts.append(_quality_section(view.quality))
    parts.append(_notes_section(view))
    api = f"/api/models/{url_segment(model)}{query({'version': version})}"
    parts.append(f'<p>This page as JSON: <a href="{esc(api)}">{esc(api)}</a></p>')
    content = f'<main id="content" data-key="{esc(key)}">{"".join(parts)}</main>'
    title = f"{'DRIFT ' if drifting else ''}{model} {version} — nlpmon"
    return layout(title, content, refresh_s=refresh_s, crumbs=[(model_href(model, version), f"{model} {version}")])


def _evidence(signals: Mapping[str, SignalPage], name: str) -> Evidence | None:
    sig = signals.get(name)
    return None if sig is None else sig.evidence


def _what_changed(view: ModelPage) -> str:
    """Three lines for whoever was paged: which labels moved, how many recent texts look new, confidence."""
    signals = view.signals
    items = []
    for name in LABEL_SIGNALS[:2]:
        ev = _evidence(signals, name)
        moved = ev.moved_labels if isinstance(ev, CategoricalEvidence) else ()
        top = [m for m in moved[:3] if is_number(m.change) and abs(m.change) >= 0.01]
        if top:
            items.append(f'<li><a href="#labels">Labels that moved most</a> ({esc(name)}): ' + ", ".join(
                f'{esc(m.label)} {pct(m.reference, 0)} → {pct(m.current, 0)}' for m in top) + "</li>")
    proj = None if view.monitored is None else view.monitored.projection
    if proj is not None:
        bands = proj.percentile_bands or (0.9, 0.99)
        pcts = [p for p in proj.current.percentile if p is not None and is_number(p)]
        if pcts:
            out = sum(1 for p in pcts if p >= bands[-1])
            items.append(f'<li><a href="#projection-section">Recent texts outside the reference</a>: {out} of '
                         f'{len(pcts)} (expected about {len(pcts) * (1 - bands[-1]):.0f} without drift); '
                         f'<a href="#examples">the ones that look newest</a>.</li>')
    for name in ("confidence", "prediction_confidence"):
        ev = _evidence(signals, name)
        if isinstance(ev, BinnedEvidence) and len(ev.reference_quantiles) >= 3 and len(ev.current_quantiles) >= 3:
            items.append(f'<li><a href="#confidence">Median {esc(name)}</a>: {num(ev.reference_quantiles[2])} in the '
                         f'reference, {num(ev.current_quantiles[2])} now.</li>')
    if not items:
        return ""
    return (f'<section aria-labelledby="changed-h"><h2 id="changed-h">What changed</h2><ul>{"".join(items)}</ul>'
            '</section>')


def _facts(view: ModelPage, now: float) -> str:
    ref = view.reference
    rate = None if view.monitored is None else view.monitored.throughput.events_per_second
    fraction = None if view.quality is None else view.quality.labelled_fraction
    items = [
        ("Status", esc(view.status.replace("_", " "))),
        ("Production events", num(view.events.get("production"))),
        ("Monitored events", num(view.monitored_events)),
        ("Events per second (event time)", num(rate, 1)),
        ("Last event", f'{esc(utc(view.last_event_time))} ({esc(age(view.last_event_time, now))})'),
        ("Reference", f'{esc(ref.source if ref.calibrated else DASH)}, {num(ref.events)} events'),
        ("False-alarm rate per signal and event", esc(ref.false_alarm_rate if ref.calibrated else DASH)),
        ("Labelled fraction", pct(fraction)),
    ]
    return '<dl class="facts">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in items) + "</dl>"


def _signals_section(signals: Mapping[str, SignalPage], history: History) -> str:
    rows = []
    for i, (name, s) in enumerate(signals.items()):
        h = history.signals.get(name)
        chart = score_chart(f"hist-{i}", name, list(history.event), list(history.time),
                            list(h.score) if h else [], list(h.drift) if h else [], height=90)
        state = ('<strong class="state drift">DRIFT</strong>' if s.drift else
                 '<span class="state ok">no drift</span>')
        rows.append(f'<tr data-signal="{esc(name)}" data-drift="{str(s.drift).lower()}">'
                    f'<th scope="row">{esc(name)}<br>'
                    f'<span class="muted">{esc(SIGNAL_MEANING.get(name, ""))}</span></th>'
                    f'<td>{state}</td><td class="num">{num(s.score)}</td><td class="num">1.00</td>'
                    f'<td>{esc(s.statistic or DASH)} over {num(s.window)} events</td>'
                    f'<td class="num">{num(s.alarms)}</td><td>{chart}</td></tr>')
    every = history.events_per_point or None
    return (f'<section id="signals" aria-labelledby="signals-h"><h2 id="signals-h">Signals</h2>'
            f'<p>Score = the largest statistic/threshold ratio over the windows; above 1 is drift. Charts: the '
            f'largest score per {num(every)} events (log scale), threshold dashed, drifted points red. History '
            f'is kept in memory and starts again after a restart.</p>'
            f'<table class="signals"><caption>Each signal against its threshold</caption><thead><tr>'
            f'<th scope="col">Signal</th><th scope="col">State</th><th scope="col">Score</th>'
            f'<th scope="col">Threshold</th><th scope="col">Worst statistic</th><th scope="col">Alarms</th>'
            f'<th scope="col">Recent history</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')



def _labels_section(signals: Mapping[str, SignalPage]) -> str:
    tables = []
    for name in LABEL_SIGNALS:
        sig = signals.get(name)
        ev = None if sig is None else sig.evidence
        if sig is None or not isinstance(ev, CategoricalEvidence) or not ev.moved_labels:
            continue
        rows = "".join(
            f'<tr><th scope="row">{esc(m.label)}</th><td class="num">{pct(m.reference)}</td>'
            f'<td class="num">{pct(m.current)}</td><td class="num change">{signed_pp(m.change)}</td>'
            f'<td aria-hidden="true"><span class="bar ref" style="width:{_bar(m.reference)}px"></span><br>'
            f'<span class="bar cur" style="width:{_bar(m.current)}px"></span></td></tr>' for m in ev.moved_labels)
        table = (f'<table class="shares"><caption>{esc(name)}: share of each label, reference against the last '
                 f'{num(ev.window)} events, largest change first{"; DRIFT" if sig.drift else ""}</caption>'
                 f'<thead><tr><th scope="col">Label</th><th scope="col">Reference</th><th scope="col">Current</th>'
                 f'<th scope="col">Change</th><th scope="col"><span class="visually-hidden">Bars</span>'
                 f'<span aria-hidden="true">reference / current</span></th></tr></thead><tbody>{rows}</tbody></table>')
        tables.append(f'<details id="shares-{esc(name)}"><summary>{esc(name)}</summary>{table}</details>'
                      if name == "token_tag" else table)
    if not tables:
        return ""
    return ('<section id="labels" aria-labelledby="labels-h"><h2 id="labels-h">Which labels moved</h2>'
            + "".join(tables) + "</section>")


SHARE_SIGNALS = ("entity_label_share", "token_tag_share")


def _partial_drift_section(signals: Mapping[str, SignalPage], history: History) -> str:
    """A new sub-population: the outlier share against its expected value and threshold, the texts it
    counted, and the labels whose share rose (per-label signals), each named."""
    parts = []
    out = signals.get("embedding_outliers")
    if out is not None and isinstance(out.evidence, OutlierShareEvidence):
        ev = out.evidence
        h = history.outlier_share
        chart = share_chart("share-hist", list(h.event) if h else [], list(h.share) if h else [],
                            list(h.threshold_share) if h else [],
                            float((h.expected_share if h else 0.0) or ev.expected_share or 0.0),
                            int(h.window_events if h else 0))
        rows = "".join(
            f'<tr><th scope="row">{num(w.window)}</th><td class="num">{num(w.marked)} of {num(w.items)}</td>'
            f'<td class="num">{pct(w.share)}</td><td class="num">{pct(w.expected_share)}</td>'
            f'<td class="num">{num(w.alarm_count)} ({pct(w.threshold_share)})</td>'
            f'<td>{"<strong>at or above</strong>" if w.marked >= w.alarm_count else "below"}</td></tr>'
            for w in ev.windows)
        counted = "".join(f'<li><span class="num">{num(c.score)}</span> {esc(c.text or DASH)}</li>'
                          for c in reversed(ev.counted))
        parts.append(
            f'<h3>Events outside the reference (embedding_outliers{"; DRIFT" if out.drift else ""})</h3>'
            f'<p>An event is outside when its out-of-reference score reaches the reference\'s '
            f'{100 * (1 - float(ev.marking_level or 0)):.1f}th percentile (scored out of sample: '
            f'{num(ev.reference_exceedances)} of {num(ev.scored_reference_items)} reference events '
            f'reach it). Chart: the share over the last {num(h.window_events if h else None)} events (solid), the '
            f'share that alarms (dashed), the share the reference predicts (dotted); exact beta-binomial '
            f'thresholds.</p>{chart}'
            f'<table class="shares"><caption>Marked events per window, against the reference</caption><thead><tr>'
            f'<th scope="col">Window</th><th scope="col">Outside</th><th scope="col">Share</th>'
            f'<th scope="col">Expected</th><th scope="col">Alarms at</th><th scope="col">State</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>'
            + (f'<p>The most recent texts it counted (score, text):</p><ol class="counted">{counted}</ol>'
               if counted else '<p>No recent event is outside the reference.</p>'))
    clu = signals.get("embedding_clusters")
    if clu is not None and isinstance(clu.evidence, ClusterEvidence):
        cev = clu.evidence
        thr = {(w.window, w.statistic): w for w in clu.windows}

        def state(window: int, statistic: str) -> str:
            t = thr.get((window, statistic))
            if t is None or not (is_number(t.value) and is_number(t.threshold)):
                return DASH
            return "<strong>at or above</strong>" if (t.value or 0.0) > t.threshold else "below"

        def stat(window: int, statistic: str) -> str:
            t = thr.get((window, statistic))
            return f'{num(None if t is None else t.value)} / {num(None if t is None else t.threshold)}'

        def pct_level(q: float) -> str:
            return f"{100 * (1 - float(q)):g}th"
        crow = "".join(
            f'<tr><th scope="row">{num(w.window)}</th><td>{pct_level(w.level)}</td>'
            f'<td class="num">{num(w.marked)} of {num(w.items)}</td>'
            f'<td class="num">{num(w.expected_marked)}</td><td class="num">{num(w.mean_pair_cosine)}</td>'
            f'<td class="num">{stat(w.window, w.statistic)}</td><td>{state(w.window, w.statistic)}</td></tr>'
            for w in cev.windows)
        levels = " and ".join(pct_level(q) for q in cev.marking_levels)
        levels += " percentiles" if len(cev.marking_levels) > 1 else " percentile"
        parts.append(
            f'<h3>Outside the reference and alike (embedding_clusters{"; DRIFT" if clu.drift else ""})</h3>'
            f'<p>Events beyond the reference\'s {levels} of out-of-reference scores (each one '
            f'a marking level with its own thresholds), compared with each other: reference outliers scatter '
            f'(mean cosine near 0), a new sub-population points one way. Statistic: the summed cosine over pairs '
            f'of marked events per marked event expected; thresholds calibrated on resampled halves of the '
            f'reference; the score is the largest statistic/threshold over windows and levels.</p>'
            f'<table class="shares"><caption>Marked events per window and how alike they are</caption><thead><tr>'
            f'<th scope="col">Window</th><th scope="col">Beyond</th><th scope="col">Marked</th>'
            f'<th scope="col">Expected</th><th scope="col">Mean cosine</th>'
            f'<th scope="col">Statistic / threshold</th><th scope="col">State</th>'
            f'</tr></thead><tbody>{crow}</tbody></table>')
    for name in SHARE_SIGNALS:
        sig = signals.get(name)
        if sig is None:
            continue
        lev = sig.evidence
        ranked = ([r for r in lev.rising_labels if is_number(r.score) and r.score > 0]
                  if isinstance(lev, LabelShareEvidence) else [])

        def named(label: str) -> str:
            return (f'<strong>{esc(label)}</strong>' + (" (labels the reference never saw)" if label == "__other__"
                                                         else ""))
        if isinstance(lev, LabelShareEvidence) and lev.label and ranked:
            top = ranked[0]
            above = is_number(top.score) and top.score > 1
            lead = (f'<p data-label="{esc(top.label)}">Label {named(top.label)} '
                    f'{"rose above its threshold" if above else "rose most, below its threshold"}: score '
                    f'{num(top.score)} (1 = threshold), {pct(top.current)} of the last {num(top.window)} '
                    f'events\' items against {pct(top.reference)} in the reference.</p>')
        else:
            lead = '<p>No label\'s share is above the reference\'s.</p>'
        lrows = "".join(
            f'<tr><th scope="row">{esc(r.label)}</th><td class="num">{pct(r.reference)}</td>'
            f'<td class="num">{pct(r.current)}</td><td class="num">{num(r.count, 0)}</td>'
            f'<td class="num">{num(r.score)}</td><td class="num">{num(r.window)}</td></tr>' for r in ranked)
        table = (f'<table class="shares"><caption>{esc(name)}: labels whose share rose (score: excess over the '
                 f'threshold, largest over the windows)</caption><thead><tr><th scope="col">Label</th>'
                 f'<th scope="col">Reference</th><th scope="col">Current</th><th scope="col">Count</th>'
                 f'<th scope="col">Score</th><th scope="col">Window</th></tr></thead><tbody>{lrows}</tbody></table>'
                 if lrows else "")
        parts.append(f'<h3>{esc(name)}{"; DRIFT" if sig.drift else ""}</h3>{lead}{table}')
    notes = [f'{esc(n)}: windows of {esc(", ".join(str(w) for w in s.windows_not_evaluated))} events are not '
             f'evaluated until the reference holds twice as many events (they would be calibrated on fewer '
             f'held-out events than they hold)' for n, s in signals.items() if s.windows_not_evaluated]
    if notes:
        parts.append('<p class="muted">' + "; ".join(notes) + ".</p>")
    if not parts:
        return ""
    return ('<section id="partial" aria-labelledby="partial-h"><h2 id="partial-h">New sub-populations</h2>'
            + "".join(parts) + "</section>")


SHAPE_SHARES = {"tag_validity": ("Tag sequences", "events with a tag invalid after the previous one", "tags"),
                "span_boundary": ("Entities across token boundaries",
                                  "events with an entity starting or ending inside a token", "entities")}


def _share_table(name: str, ev: EventShareEvidence, unit: str) -> str:
    rows = "".join(
        f'<tr><th scope="row">{num(w.window)}</th><td class="num">{num(w.marked)} of {num(w.items)}</td>'
        f'<td class="num">{pct(w.share)}</td><td class="num">{pct(w.expected_share, 3)}</td>'
        f'<td class="num">{num(w.alarm_count)} ({pct(w.threshold_share)})</td>'
        f'<td class="num">{num(w.bad_units)} of {num(w.units)} ({pct(w.unit_share)})</td>'
        f'<td>{"<strong>at or above</strong>" if w.marked >= w.alarm_count else "below"}</td></tr>'
        for w in ev.windows)
    if not rows:
        return ""
    return (f'<table class="shares"><caption>{esc(name)}: marked events per window, against the reference '
            f'(exact beta-binomial thresholds)</caption><thead><tr><th scope="col">Window</th>'
            f'<th scope="col">Marked</th><th scope="col">Share</th><th scope="col">Expected</th>'
            f'<th scope="col">Alarms at</th><th scope="col">Bad {esc(unit)}</th><th scope="col">State</th></tr>'
            f'</thead><tbody>{rows}</tbody></table>')


def _tag_example(x: TagExample) -> str:
    toks = " ".join(
        (f'<mark class="invalid" title="invalid after the previous tag">{esc(t.text or "")}/'
         f'<b>{esc(t.tag)}</b></mark>' if t.invalid else
         f'{esc(t.text or "")}/{esc(t.tag)}') for t in x.tokens)
    lead = "… " if x.first_token > 0 else ""
    return (f'<li data-event="{esc(x.event_id)}"><code class="tags">{lead}{toks}</code>'
            f'<br><span class="muted">{esc(x.event_id)}</span> {esc(x.text or DASH)}</li>')


def _boundary_example(x: BoundaryExample) -> str:
    ents = ", ".join(f'{esc(e.label)} [{num(e.start)}, {num(e.end)}) '
                     f'&ldquo;{esc(e.text or "")}&rdquo;' for e in x.entities)
    toks = " | ".join(esc(t) for t in x.tokens)
    return (f'<li data-event="{esc(x.event_id)}">{num(x.crossing_entities)} crossing: {ents}'
            f'<br><span class="muted">tokens:</span> <code>{toks}</code>'
            f'<br><span class="muted">{esc(x.event_id)}</span> {esc(x.text or DASH)}</li>')


def _quantiles(qs: Sequence[float | None] | None) -> str:
    return " / ".join(num(q) for q in qs or ())


def _ner_shape_section(signals: Mapping[str, SignalPage]) -> str:
    """Tag-sequence validity and span shape: marked shares against the reference with the most recent
    examples (invalid tag sequences, entities crossing token boundaries), and span lengths per label."""
    parts = []
    for name, (title, what, unit) in SHAPE_SHARES.items():
        sig = signals.get(name)
        if sig is None or not isinstance(sig.evidence, EventShareEvidence):
            continue
        ev = sig.evidence
        scheme = (f' Scheme {esc(str(ev.scheme).upper())} ({esc(ev.scheme_source or "")}).'
                  if ev.scheme else "")
        items = "".join(_tag_example(x) if isinstance(x, TagExample) else _boundary_example(x)
                        for x in reversed(ev.examples))
        parts.append(
            f'<h3>{esc(title)} ({esc(name)}{"; DRIFT" if sig.drift else ""})</h3>'
            f'<p>Share of {esc(what)}: {num(ev.reference_marked)} of {num(ev.reference_events)} '
            f'reference events, expected share {pct(ev.expected_share, 3)}.{scheme}</p>'
            f'{_share_table(name, ev, unit)}'
            + (f'<p>The most recent events it counted:</p><ol class="counted">{items}</ol>' if items
               else '<p>No recent event was counted.</p>'))
    sig = signals.get("span_length")
    if sig is not None:
        bev = sig.evidence if isinstance(sig.evidence, BinnedEvidence) else None
        overall = (f'<p>All labels, last {num(None if bev is None else bev.window)} events: reference '
                   f'{_quantiles(None if bev is None else bev.reference_quantiles)}, current '
                   f'{_quantiles(None if bev is None else bev.current_quantiles) or DASH}.</p>')
        rows = "".join(
            f'<tr><th scope="row">{esc(r.label)}</th><td class="num">{num(r.reference_count)}</td>'
            f'<td>{_quantiles(r.reference) or DASH}</td>'
            f'<td class="num">{num(r.current_count)}</td>'
            f'<td>{_quantiles(r.current) or DASH}</td>'
            f'<td class="num change">{num(r.median_change)}</td></tr>'
            for r in (bev.by_label or () if bev is not None else ()))
        table = (f'<table class="span-length"><caption>Entity length quantiles (5 / 25 / 50 / 75 / 95 %) per label, '
                 f'in tokens (characters for events without tokens), reference sample against recent entities, '
                 f'largest median change first</caption><thead><tr><th scope="col">Label</th>'
                 f'<th scope="col">Reference n</th><th scope="col">Reference quantiles</th>'
                 f'<th scope="col">Current n</th><th scope="col">Current quantiles</th>'
                 f'<th scope="col">Median change</th></tr></thead><tbody>{rows}</tbody></table>' if rows else "")
        parts.append(f'<h3>Entity length (span_length{"; DRIFT" if sig.drift else ""})</h3>{overall}{table}')
    if not parts:
        return ""
    return ('<section id="ner-shape" aria-labelledby="ner-shape-h"><h2 id="ner-shape-h">Tag sequences and '
            'entity spans</h2>' + "".join(parts) + "</section>")


def _bar(share: float | None) -> str:
    return f"{160 * float(share):.0f}" if share is not None and is_number(share) else "0"


def _confidence_section(conf: ConfidenceByLabel, signals: Mapping[str, SignalPage]) -> str:
    rows = []
    for r in conf.labels:
        rows.append(f'<tr><th scope="row">{esc(r.label)}</th>'
                    f'<td class="num">{num(r.reference_count)}</td>'
                    f'<td>{_quantiles(r.reference) or DASH}</td>'
                    f'<td class="num">{num(r.current_count)}</td>'
                    f'<td>{_quantiles(r.current) or DASH}</td>'
                    f'<td class="num change">{num(r.median_change)}</td></tr>')
    overall = ""
    for name in ("confidence", "prediction_confidence"):
        sig = signals.get(name)
        ev = None if sig is None else sig.evidence
        if sig is not None and isinstance(ev, BinnedEvidence) and ev.current_quantiles:
            overall += (f'<p>{esc(name)} (all labels, last {num(ev.window)} events): reference '
                        f'{_quantiles(ev.reference_quantiles)}, current '
                        f'{_quantiles(ev.current_quantiles)}'
                        f'{" — DRIFT" if sig.drift else ""}.</p>')
    if not rows and not overall:
        return ""
    q = " / ".join(f"{100 * float(v):.0f}" for v in conf.levels)
    table = (f'<table class="confidence"><caption>Confidence quantiles ({esc(q)} %) per predicted label, '
             f'reference sample against the last {num(conf.current_sample)} scored predictions, largest '
             f'median change first</caption><thead><tr><th scope="col">Label</th><th scope="col">Reference n</th>'
             f'<th scope="col">Reference quantiles</th><th scope="col">Current n</th>'
             f'<th scope="col">Current quantiles</th><th scope="col">Median change</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>' if rows else "")
    return ('<section id="confidence" aria-labelledby="confidence-h"><h2 id="confidence-h">Confidence</h2>'
            f'{overall}{table}</section>')


def _projection_section(proj: Projection | None, selected: str | None, model: str, version: str) -> str:
    head = '<section id="projection-section" aria-labelledby="projection-h"><h2 id="projection-h">Embeddings</h2>'
    if proj is None:
        return head + '<p class="muted">No document embeddings: nothing to project.</p></section>'
    svg, counts = projection_chart(proj, selected)
    bands = proj.percentile_bands or (0.9, 0.99)
    legend = (f'<ul class="legend"><li><span class="key ref" aria-hidden="true"></span> reference '
              f'({num(proj.reference_events)} events)</li>'
              f'<li><span class="key inside" aria-hidden="true"></span> recent, inside the reference '
              f'({num(counts.get("inside"))})</li>'
              f'<li><span class="key edge" aria-hidden="true">◆</span> recent, at its edge: above the '
              f'{100 * bands[0]:.0f}th percentile ({num(counts.get("edge"))})</li>'
              f'<li><span class="key outside" aria-hidden="true">▲</span> recent, outside: above the '
              f'{100 * bands[-1]:.0f}th percentile ({num(counts.get("outside"))})</li></ul>')
    return (f'{head}{projection_note(proj)}<figure>{svg}<figcaption>{projection_caption(proj)}: '
            f'reference sample and the last {num(proj.current_events)} events, each coloured by how far '
            f'out of the reference it lies (its out-of-reference score against the reference sample\'s own '
            f'scores). Hover a point for its text; click a recent one to select it.{legend}</figcaption>'
            f'</figure></section>')


def _find_example(view: ModelPage, event_id: str) -> Example | None:
    m = view.monitored
    if m is None:
        return None
    for item in (*m.outliers, *m.examples.lowest_confidence, *m.examples.smallest_margin):
        if item.event_id == event_id:
            return item
    if m.projection is None:
        return None
    cur, ref_text = m.projection.current, m.projection.reference.text
    for i, eid in enumerate(cur.event_id):
        if eid == event_id:
            near = tuple(Neighbour(j, d, ref_text[j] if j < len(ref_text) else None)
                         for j, d in zip(cur.nearest[i], cur.distance[i], strict=True))
            return Example(cur.score[i], cur.index[i], eid, cur.text[i], (), near)
    return None


def _selected_section(view: ModelPage, selected: str) -> str:
    item = _find_example(view, selected)
    head = '<section id="selected" aria-labelledby="selected-h"><h2 id="selected-h">Selected example</h2>'
    if item is None:
        return (f'{head}<p>Event {esc(selected)} is no longer among the recent examples (they change as events '
                f'arrive).</p></section>')
    return (f'{head}<p>Event <code>{esc(item.event_id)}</code> (monitored event {num(item.index)}, '
            f'score {num(item.score)}):</p><blockquote class="text">'
            f'{highlight(item.text, _entities(item))}</blockquote>'
            f'<h3>Nearest reference examples</h3>{_neighbours(item.nearest_reference)}</section>')


def _entities(item: Example) -> list[dict[str, Any]]:
    """An example's entities as ``markup.highlight`` reads them."""
    return [e.to_json() for e in item.entities]


def _neighbours(near: Sequence[Neighbour]) -> str:
    if not near:
        return '<p class="muted">No reference embedding to compare with (or restored from a snapshot).</p>'
    return ('<ol class="near">' + "".join(f'<li><span class="muted">distance {num(n.distance)}:</span> '
                                          f'{esc(n.text or "(no text)")}</li>' for n in near) + "</ol>")


def _uid(kind: str, event_id: str) -> str:
    return f"near-{kind}-{hashlib.sha1(str(event_id).encode()).hexdigest()[:12]}"


def _example_list(kind: str, items: Sequence[Example], model: str, version: str, score_name: str,
                  weakest: bool = False) -> str:
    if not items:
        return '<p class="muted">None in the recent events.</p>'
    lis = []
    for it in items:
        extra = ""
        if it.top_two:
            extra = " — " + " vs ".join(f'{esc(t.label)} {num(t.probability)}' for t in it.top_two)
        elif it.prediction is not None:
            extra = f' — predicted {esc(it.prediction.label)} {num(it.prediction.score)}'
        href = model_href(model, version, example=it.event_id) + "#selected"
        near = it.nearest_reference
        lis.append(f'<li><p class="meta">{esc(score_name)} {num(it.score, 3)}{extra} · event '
                   f'<code>{esc(it.event_id)}</code> · <a href="{esc(href)}">select</a></p>'
                   f'<p class="text">{highlight(it.text, _entities(it), weakest)}</p>'
                   f'<details id="{_uid(kind, it.event_id)}"><summary>Similar reference texts '
                   f'({len(near)})</summary>{_neighbours(near)}</details></li>')
    return f'<ol class="examples {esc(kind)}">{"".join(lis)}</ol>'


def _examples_section(view: ModelPage, m: MonitoredBlocks, model: str, version: str) -> str:
    ex = m.examples
    recent = num(ex.recent_events)
    margin = (_example_list("margin", ex.smallest_margin, model, version, "margin")
              if ex.margin_available else
              f'<p class="muted">Not available for this model: {esc(ex.margin_note or "")}.</p>')
    note = ('<p class="muted">Texts are not kept (pages.keep_texts is false): each example shows its entity '
            'labels and scores.</p>' if view.texts.kept is False else
            '<p class="muted">Texts are redacted (pages.redact): matches of the redaction patterns show as '
            '\u2588.</p>' if view.texts.redacted else "")
    return (f'<section id="examples" aria-labelledby="examples-h"><h2 id="examples-h">Example texts</h2>{note}'
            f'<h3 id="outliers-h">Texts that look new (most out of the reference)</h3>'
            f'{_example_list("outlier", m.outliers, model, version, "out-of-reference score")}'
            f'<h3 id="lowconf-h">Lowest-confidence predictions (last {recent} events)</h3>'
            f'{_example_list("lowconf", ex.lowest_confidence, model, version, "confidence", True)}'
            f'<h3 id="margin-h">Closest to a class boundary: smallest margin between the top two probabilities '
            f'(last {recent} events)</h3>{margin}</section>')


def _quality_section(q: QualityReport) -> str:
    """Delayed-ground-truth figures (``QualityMonitor.view(version)``): the window against the labelled
    reference, the F1-drop and calibration tests, per label precision/recall/F1 and the label-free estimate."""
    w = q.window
    ref_labels = q.reference.figures.labels
    est, gap = q.estimated_precision, q.calibration_gap
    rows = "".join(
        f'<tr><th scope="row">{esc(name)}</th><td class="num">{num(v.precision, 3)}</td>'
        f'<td class="num">{num(v.recall, 3)}</td><td class="num">{num(v.f1, 3)}</td>'
        f'<td class="num">{num(None if name not in ref_labels else ref_labels[name].f1, 3)}</td>'
        f'<td class="num">{num(v.support)}</td><td class="num">{num(est.get(name), 3)}</td>'
        f'<td class="num">{num(gap.get(name), 3)}</td></tr>'
        for name, v in sorted(w.labels.items(), key=lambda kv: (-(kv[1].support or 0), kv[0])))
    micro, drop, overall = w.micro, q.f1_drop, q.calibration_gap_overall

    def test(t: F1Drop | CalibrationGapOverall) -> str:
        if not is_number(t.score):
            return "not tested yet (too few labelled documents)"
        verdict = "<strong class=\"state drift\">DROP</strong>" if t.drift else "no significant change"
        return f'{verdict} (score {num(t.score)}, threshold {num(t.threshold)})'

    facts = [("Labelled fraction", pct(q.labelled_fraction)),
             ("Labelled documents in window", num(w.documents)),
             ("Micro precision / recall / F1", f'{num(micro.precision, 3)} / {num(micro.recall, 3)} / '
                                               f'{num(micro.f1, 3)}'),
             ("Macro F1", num(w.macro_f1, 3))]
    if w.classification:
        facts.append(("Accuracy", num(w.accuracy, 3)))
    facts.append(("Micro F1, reference → now", f'{num(drop.reference_f1, 3)} → '
                                               f'{num(drop.current_f1, 3)}: {test(drop)}'))
    facts.append(("Calibration gap (realised − estimated precision)",
                  f'{num(overall.gap, 3)} (realised {num(overall.realised, 3)}, estimated '
                  f'{num(overall.estimated, 3)}); {test(overall)}' if overall is not None else DASH))
    facts.append(("Estimate calibrated on labelled reference", "yes" if q.calibrated else "no (raw confidences)"))
    dl = '<dl class="facts">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts) + "</dl>"
    table = (f'<table class="quality"><caption>Per label, from delayed ground truth over the quality window, '
             f'largest support first</caption><thead><tr><th scope="col">Label</th><th scope="col">Precision</th>'
             f'<th scope="col">Recall</th><th scope="col">F1</th><th scope="col">Reference F1</th>'
             f'<th scope="col">Support</th><th scope="col">Estimated precision</th>'
             f'<th scope="col">Calibration gap</th></tr></thead>'
             f'<tbody>{rows}</tbody></table>' if rows else '<p class="muted">No labelled predictions yet.</p>')
    return (f'<section id="quality" aria-labelledby="quality-h"><h2 id="quality-h">Quality</h2>{dl}{table}'
            f'{partial_match_section(q.partial_match)}</section>')


def _notes_section(view: ModelPage) -> str:
    notes = []
    for name, why in view.reference.unavailable.items():
        notes.append(f"<li>Signal {esc(name)} unavailable: {esc(why)}</li>")
    for cp in (() if view.monitored is None else view.monitored.change_points[-5:]):
        notes.append(f'<li>Change point in {esc(cp.signal)} at monitored event {num(cp.event)}</li>')
    if not notes:
        return ""
    return ('<section id="notes" aria-labelledby="notes-h"><h2 id="notes-h">Notes</h2><ul>'
            + "".join(notes) + "</ul></section>")
