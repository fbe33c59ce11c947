"""The partial-match part of the model page's quality section (``QualityReport.partial_match``).

Two tables: each SemEval-2013 scheme over the window (its five counts, precision, recall, F1, the
baseline's F1 and its F1-drop test), and F1 per label and scheme; above them one sentence saying what
the flagged schemes point at (boundaries or types), so that whoever was paged can tell a tokenizer
regression from a labelling failure.
"""

from __future__ import annotations

from ..quality.report import F1Drop, PartialMatch, SchemeFigures
from .markup import DASH, esc, is_number, num

__all__ = ["SCHEME_MEANING", "partial_match_section", "reading"]

SCHEME_MEANING = {
    "strict": "right boundaries and right type",
    "exact": "right boundaries, any type",
    "partial": "overlapping boundaries count half, any type",
    "ent_type": "overlapping span with the right type",
}


def reading(flagged: set[str]) -> str:
    """What a set of schemes with a significant F1 drop usually means (one sentence)."""
    if not flagged:
        return "No scheme's F1 dropped significantly."
    if {"strict", "exact"} <= flagged and "ent_type" not in flagged:
        return ("Boundaries moved and types did not (exact down, ent_type steady): look for a tokenizer or "
                "pre-processing change that splits or extends names.")
    if {"strict", "ent_type"} <= flagged and not flagged & {"exact", "partial"}:
        return ("The spans are right and their types wrong (ent_type down, exact steady): a labelling or "
                "type-mapping problem.")
    if flagged >= {"strict", "exact", "partial", "ent_type"}:
        return "Every scheme dropped: the model misses or invents entities, not only their boundaries or types."
    return f"F1 dropped in {', '.join(sorted(flagged))}: compare the per-label figures below."


def _test(t: F1Drop) -> str:
    if not is_number(t.score):
        return "not tested yet"
    if t.drift:
        return f'<strong class="state drift">DROP</strong> (z {num(t.score)})'
    return f'no significant change (z {num(t.score)})'


def partial_match_section(pm: PartialMatch | None) -> str:
    """HTML for a quality report's ``partial_match`` (empty string when the report has none)."""
    if pm is None:
        return ""
    schemes, ref = pm.schemes, pm.reference_schemes
    rows = []
    for name, block in schemes.items():
        o = block.overall
        ref_f1 = None if name not in ref else ref[name].f1
        drift = str(block.f1_drop.drift).lower()
        rows.append(
            f'<tr data-scheme="{esc(name)}" data-drift="{drift}">'
            f'<th scope="row">{esc(name)}<br><span class="muted">{esc(SCHEME_MEANING.get(name, ""))}</span></th>'
            + "".join(f'<td class="num">{num(c)}</td>' for c in (o.correct, o.incorrect, o.partial, o.missed,
                                                                  o.spurious))
            + f'<td class="num">{num(o.precision, 3)}</td><td class="num">{num(o.recall, 3)}</td>'
            f'<td class="num">{num(o.f1, 3)}</td><td class="num">{num(ref_f1, 3)}</td>'
            f'<td>{_test(block.f1_drop)}</td></tr>')
    flagged = {n for n, b in schemes.items() if b.f1_drop.drift}

    def label_figure(b: SchemeFigures, lab: str, field: str) -> float | None:
        block = b.labels.get(lab)
        return None if block is None else (block.f1 if field == "f1" else block.possible)

    labels = sorted({lab for b in schemes.values() for lab in b.labels},
                    key=lambda lab: (-max(label_figure(b, lab, "possible") or 0 for b in schemes.values()), lab))
    strict = schemes.get("strict")
    label_rows = "".join(
        f'<tr><th scope="row">{esc(lab)}</th>'
        + "".join(f'<td class="num">{num(label_figure(b, lab, "f1"), 3)}</td>' for b in schemes.values())
        + f'<td class="num">{num(None if strict is None else label_figure(strict, lab, "possible"))}'
        f'</td></tr>' for lab in labels)
    head = "".join(f'<th scope="col">{esc(n)} F1</th>' for n in schemes)
    per_label = (f'<table class="quality partial-labels"><caption>F1 per label and scheme (each label '
                 f'evaluated alone), most gold spans first</caption><thead><tr><th scope="col">Label</th>{head}'
                 f'<th scope="col">Gold spans</th></tr></thead><tbody>{label_rows}</tbody></table>'
                 if label_rows else "")
    return (f'<section id="partial-match" aria-labelledby="partial-match-h">'
            f'<h3 id="partial-match-h">Partial matches (SemEval-2013 schemes, as nervaluate counts them)</h3>'
            f'<p id="partial-reading">{esc(reading(flagged))}</p>'
            f'<p class="muted">Over the {num(pm.documents)} labelled documents of the window; an overlap '
            f'shares at least {num(pm.min_overlap_percent)} % of the gold span. Partial counts half in '
            f'the partial scheme.</p>'
            f'<table class="quality partial"><caption>Each scheme over all labels: counts, precision, recall, '
            f'F1, the baseline\'s F1 and the F1-drop test</caption><thead><tr><th scope="col">Scheme</th>'
            f'<th scope="col">Correct</th><th scope="col">Incorrect</th><th scope="col">Partial</th>'
            f'<th scope="col">Missed</th><th scope="col">Spurious</th><th scope="col">Precision</th>'
            f'<th scope="col">Recall</th><th scope="col">F1</th><th scope="col">Reference F1</th>'
            f'<th scope="col">F1 drop</th></tr></thead><tbody>{"".join(rows) or DASH}</tbody></table>'
            f'{per_label}</section>')
