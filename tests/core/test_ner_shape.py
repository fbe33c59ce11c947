"""Tag-sequence validity and span shape against hand-checked cases and brute-force oracles: validity rules per
scheme, scheme detection, token alignment and span measures, exact beta-binomial thresholds, window counts
equal to a recomputation for any batch split, and the snapshot round trip with the new signals."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import integrate, stats

from nlpmon.drift.items import ItemColumn
from nlpmon.drift.outliers import count_thresholds
from nlpmon.drift.shares import EventShareFeaturizer, TagValidityFeaturizer, beta_binomial_thresholds
from nlpmon.drift.signal import SignalWindow, calibrate_event_share_signal
from nlpmon.drift.spans import align_tokens, span_shapes
from nlpmon.drift.tagging import SCHEMES, TagCodes, detect_scheme, invalid_tokens, invalid_tokens_reference
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.signals import SIGNAL_NAMES, SPAN_LABELS, extract_columns

NEW = ("tag_validity", "span_length", "span_boundary")


def flat(seqs: list[list[str]]) -> tuple[list[str], np.ndarray]:
    tags = [t for s in seqs for t in s]
    return tags, np.repeat(np.arange(len(seqs)), [len(s) for s in seqs]).astype(np.int64)


def vectorised(scheme: Any, seqs: list[list[str]]) -> list[list[bool]]:
    tags, ev = flat(seqs)
    bad = invalid_tokens(scheme, TagCodes(scheme).codes(tags), ev).tolist()
    out, i = [], 0
    for s in seqs:
        out.append(bad[i:i + len(s)])
        i += len(s)
    return out


# (scheme, tags, invalid positions), checked by hand against the scheme definitions
CASES = [
    ("iob2", ["O", "I-PER"], [1]),
    ("iob2", ["I-PER"], [0]),
    ("iob2", ["B-LOC", "I-PER"], [1]),
    ("iob2", ["B-PER", "I-PER", "I-PER", "O", "B-LOC"], []),
    ("iob2", ["B-PER", "E-PER"], [1]),  # E is no IOB2 prefix
    ("iob2", ["B_PER", "I_PER"], []),
    ("iob2", ["NOUN", "O"], [0]),
    ("iob1", ["I-PER", "I-PER", "B-PER"], []),
    ("iob1", ["O", "B-PER"], [1]),
    ("iob1", ["I-LOC", "B-PER"], [1]),
    ("iob1", ["O", "I-PER", "O"], []),
    ("bioes", ["S-PER", "B-LOC", "E-LOC", "O"], []),
    ("bioes", ["B-PER", "O"], [1]),
    ("bioes", ["O", "E-PER"], [1]),
    ("bioes", ["B-PER", "I-LOC", "E-LOC"], [1]),  # E-LOC is valid after the (itself invalid) I-LOC
    ("bioes", ["O", "B-PER"], [1]),  # ends inside a chunk
    ("bioes", ["B-PER", "S-PER"], [1]),
    ("bioes", ["I-PER", "E-PER"], [0]),
    ("bioes", ["B-PER", "L-PER"], [1]),  # L is no BIOES prefix
    ("biluo", ["U-PER", "B-ORG", "I-ORG", "L-ORG"], []),
    ("biluo", ["B-ORG", "E-ORG"], [1]),
    ("biluo", ["O", "L-ORG"], [1]),
    ("biluo", ["B-ORG", "I-ORG"], [1]),
]


@pytest.mark.parametrize(("scheme", "tags", "bad"), CASES, ids=lambda x: str(x))
def test_validity_rules_on_hand_checked_cases(scheme: Any, tags: list[str], bad: list[int]) -> None:
    want = [i in bad for i in range(len(tags))]
    assert invalid_tokens_reference(scheme, [tags]) == [want]
    assert vectorised(scheme, [tags]) == [want]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_vectorised_validity_equals_the_token_by_token_oracle(scheme: Any) -> None:
    rng = np.random.default_rng(7)
    vocab = ["O", "O", "O", "B-PER", "I-PER", "E-PER", "S-PER", "L-LOC", "U-LOC", "B-LOC", "I-LOC", "E-LOC",
             "NOUN", "B_ORG", "I_ORG"]
    seqs = [[vocab[int(j)] for j in rng.integers(0, len(vocab), int(rng.integers(1, 12)))] for _ in range(400)]
    assert vectorised(scheme, seqs) == invalid_tokens_reference(scheme, seqs)


def scheme_tags(scheme: str, spans: list[tuple[int, int, str]], n: int) -> list[str]:
    """Tags of n tokens for token spans [a, b) in a scheme (IOB1: chunks open with I-, B- only between two
    adjacent chunks of one type)."""
    tags = ["O"] * n
    for a, b, lab in spans:
        for i in range(a, b):
            if scheme == "iob1":
                p = "B" if i == a and a > 0 and tags[a - 1].endswith(lab) else "I"
            elif scheme == "iob2":
                p = "B" if i == a else "I"
            else:
                e, s = ("E", "S") if scheme == "bioes" else ("L", "U")
                p = s if b - a == 1 else ("B" if i == a else e if i == b - 1 else "I")
            tags[i] = f"{p}-{lab}"
    return tags


def random_docs(scheme: str, n_docs: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        n = int(rng.integers(3, 15))
        spans, i = [], 0
        while i < n:
            if rng.random() < 0.3:
                b = min(n, i + int(rng.integers(1, 4)))
                spans.append((i, b, ["PER", "LOC", "ORG"][int(rng.integers(3))]))
                i = b
            else:
                i += 1
        docs.append(scheme_tags(scheme, spans, n))
    return docs


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_detection_finds_the_scheme_of_valid_sequences(scheme: Any) -> None:
    docs = random_docs(scheme, 300, 1)
    tags, ev = flat(docs)
    found, why = detect_scheme(tags, ev)
    assert found == scheme, why
    assert not any(any(row) for row in invalid_tokens_reference(scheme, docs))


def test_scheme_detection_refuses_tags_of_no_scheme() -> None:
    pos = ["NOUN", "VERB", "DET", "O"] * 50
    ev = np.repeat(np.arange(50), 4).astype(np.int64)
    assert detect_scheme(pos, ev)[0] is None
    assert "no tagging scheme" in detect_scheme(pos, ev)[1]
    assert detect_scheme(["O"] * 200, ev)[0] is None
    mixed = ["S-PER", "U-PER", "O", "O"] * 50
    assert detect_scheme(mixed, ev)[0] is None
    assert detect_scheme([], np.zeros(0, np.int64))[0] is None


def test_tokens_align_in_order_and_sub_word_markers_are_stripped() -> None:
    assert align_tokens("New York is big", ["New", "York", "is", "big"]) == [(0, 3), (4, 8), (9, 11), (12, 15)]
    assert align_tokens("a a", ["a", "a"]) == [(0, 1), (2, 3)]
    assert align_tokens("playing", ["play", "##ing"]) == [(0, 4), (4, 7)]
    assert align_tokens("hello world", ["Ġhello", "Ġworld"]) == [(0, 5), (6, 11)]
    assert align_tokens("abc", ["abc", "d"]) is None
    assert align_tokens("abc", [None]) is None


def test_span_shapes_equal_a_per_entity_recomputation() -> None:
    rng = np.random.default_rng(3)
    tok_ev, tok_s, tok_e, ent_ev, ent_s, ent_e = [], [], [], [], [], []
    n_events = 300
    tokenised = rng.random(n_events) < 0.8
    layouts: dict[int, list[tuple[int, int]]] = {}
    for e in range(n_events):
        pos, toks = 0, []
        if tokenised[e] and rng.random() < 0.9:  # some tokenised events do not align
            for _ in range(int(rng.integers(1, 10))):
                pos += int(rng.integers(0, 3))
                ln = int(rng.integers(1, 6))
                toks.append((pos, pos + ln))
                pos += ln
            layouts[e] = toks
            tok_ev += [e] * len(toks)
            tok_s += [a for a, _ in toks]
            tok_e += [b for _, b in toks]
        for _ in range(int(rng.integers(0, 4))):
            a = int(rng.integers(0, 40))
            ent_ev.append(e)
            ent_s.append(a)
            ent_e.append(a + int(rng.integers(0, 10)))
    order = np.argsort(ent_ev, kind="stable")
    ev, s, e_ = (np.asarray(x, np.int64)[order] for x in (ent_ev, ent_s, ent_e))
    sh = span_shapes(np.asarray(tok_ev, np.int64), np.asarray(tok_s, np.int64), np.asarray(tok_e, np.int64),
                     tokenised, ev, s, e_)
    want = []
    for i in range(ev.size):
        x, a, b = int(ev[i]), int(s[i]), int(e_[i])
        if not tokenised[x]:
            want.append((i, x, float(b - a), False, False))
        elif x in layouts and b <= layouts[x][-1][1]:
            toks = layouts[x]
            n = sum(1 for ta, tb in toks if ta < b and tb > a)
            cross = any(ta < a < tb for ta, tb in toks) or any(ta < b < tb for ta, tb in toks)
            want.append((i, x, float(n), True, cross))
    got = list(zip(sh.index.tolist(), sh.event.tolist(), sh.length.tolist(), sh.in_tokens.tolist(),
                   sh.crosses.tolist(), strict=True))
    assert got == want
    assert any(w[4] for w in want) and any(w[3] and not w[4] for w in want)


def bb_tail(c: int, n: int, a: float, b: float) -> float:
    def f(u: float) -> float:
        return float(stats.binom.sf(c - 1, n, u) * stats.beta.pdf(u, a, b))
    hi = min(1.0, stats.beta.isf(1e-14, a, b))
    return float(integrate.quad(f, 0.0, hi, limit=200, epsabs=1e-16, epsrel=1e-8, points=[a / (a + b)])[0])


@pytest.mark.parametrize(("k", "m", "level"), [(0, 3000, 1e-6 / 6), (2, 500, 1e-6 / 6), (40, 1000, 1e-3)])
def test_event_share_thresholds_are_exact_beta_binomial_counts(k: int, m: int, level: float) -> None:
    """Posterior Beta(k + 1, m - k + 1): the smallest count whose tail is within the level, checked by
    integrating the binomial tail over the Beta density."""
    thr = beta_binomial_thresholds(k + 1.0, m - k + 1.0, 300, level)
    for n in (1, 20, 50, 300):
        c = int(thr[n])
        if c <= n:
            assert bb_tail(c, n, k + 1.0, m - k + 1.0) <= level * (1 + 1e-6)
        if c - 1 >= 1:
            assert bb_tail(c - 1, n, k + 1.0, m - k + 1.0) > level * (1 - 1e-6)
    # the outlier signal's thresholds are the same computation with a = k, b = m + 1 - k
    np.testing.assert_array_equal(beta_binomial_thresholds(float(k + 1), float(m - k), 300, level),
                                  count_thresholds(m, k + 1, 300, level))


def tag_column(docs: list[list[str]]) -> ItemColumn:
    tags, ev = flat(docs)
    return ItemColumn(ev, tags)


def test_window_counts_equal_a_brute_force_recomputation_for_any_batch_split() -> None:
    ref = random_docs("iob2", 1000, 11)
    model = calibrate_event_share_signal("tag_validity", TagValidityFeaturizer(0, 0, np.ones(1), 0.0, scheme="iob2"),
                                         tag_column(ref), len(ref), windows=(20, 50, 100), false_alarm_rate=1e-6)
    feat = model.featurizer
    assert isinstance(feat, TagValidityFeaturizer) and feat.marked == 0 and feat.reference_items == 1000
    rng = np.random.default_rng(5)
    docs = random_docs("iob2", 700, 12)
    for i in range(300, 700):  # a fault: 10 % of documents get one I- after O
        o = [j for j in range(1, len(docs[i])) if docs[i][j] == "O" and docs[i][j - 1] == "O"]
        if o and rng.random() < 0.1:
            docs[i][o[0]] = "I-PER"
    docs[5] = []  # an event without tokens: no item
    oracle = invalid_tokens_reference("iob2", docs)
    rows = np.array([[float(any(r)), float(sum(r)), float(len(r))] for r in oracle])
    items = np.array([float(len(r) > 0) for r in oracle])
    results = []
    for split_seed in range(3):
        win = SignalWindow(model, 50, None)
        cuts = np.sort(np.random.default_rng(split_seed).choice(np.arange(1, 700), 6, replace=False))
        ratios = []
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), 700], strict=True):
            part = docs[a:b]
            upd = win.update(tag_column(part), len(part), np.full(len(part), np.nan))
            ratios.append(upd.ratio)
        for w in model.windows:
            sums, its = win.windows.current_sums(w)  # type: ignore[misc]
            np.testing.assert_array_equal(sums, rows[-w:].sum(axis=0))
            assert its == items[-w:].sum()
        results.append(np.concatenate(ratios))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # the statistic: at each judged event (every 5), marked count / (threshold - 0.5) of each full window
    for t in range(4, 700, 5):
        want = max(rows[t + 1 - w:t + 1, 0].sum() / (feat.threshold_counts(np.array([items[t + 1 - w:t + 1].sum()]))[0]
                                                     - 0.5) for w in model.windows if t + 1 >= w) if t + 1 >= 20 else 0
        assert results[0][t] == pytest.approx(want, rel=1e-12), t
    assert results[0][:300].max() < 1.0 < results[0][300:].max()


def ner_event(i: int, rng: np.random.Generator, scheme: str, split: str = "production",
              grow: bool = False) -> dict[str, Any]:
    words = ["w" + str(int(x)) for x in rng.integers(0, 50, int(rng.integers(4, 12)))]
    text = " ".join(words)
    offs, pos = [], 0
    for w in words:
        offs.append((pos, pos + len(w)))
        pos += len(w) + 1
    spans, ents, j = [], [], 0
    while j < len(words):
        if rng.random() < 0.2:
            b = min(len(words), j + int(rng.integers(1, 3)) + (1 if grow else 0))
            lab = ["PER", "LOC"][int(rng.integers(2))]
            spans.append((j, b, lab))
            ents.append({"label": lab, "start": offs[j][0], "end": offs[b - 1][1], "score": 0.9})
            j = b + 1
        else:
            j += 1
    tags = scheme_tags(scheme, spans, len(words))
    return {"event_id": f"{split}-{i}", "model": "ner", "model_version": "1", "task": "token-classification",
            "split": split, "text": text, "entities": ents,
            "tokens": [{"text": w, "tag": t} for w, t in zip(words, tags, strict=True)]}


def lines(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def test_columns_measure_spans_in_tokens_and_keep_their_labels() -> None:
    rng = np.random.default_rng(0)
    evs = [decode_event(x) for x in lines([ner_event(i, rng, "bioes") for i in range(50)])]
    cols, _ = extract_columns(evs)
    n_ents = sum(len(e.entities) for e in evs)
    assert len(cols["span_length"]) == n_ents == len(cols[SPAN_LABELS]) == len(cols["span_boundary"])
    assert set(cols["span_length"].values.tolist()) <= {1.0, 2.0} and cols["span_boundary"].values.sum() == 0
    assert list(cols[SPAN_LABELS].values) == [x.label for e in evs for x in e.entities]


def test_snapshot_round_trip_with_the_new_signals() -> None:
    rng = np.random.default_rng(1)
    config = MonitorConfig(disabled_signals=tuple(s for s in SIGNAL_NAMES if s not in NEW), outlier_examples=3)
    ref = [ner_event(i, rng, "bioes", "reference") for i in range(600)]
    prod = [ner_event(i, rng, "bioes") for i in range(400)]
    for e in prod[200:260]:  # invalid sequences: an E- without its B-
        e["tokens"][0]["tag"] = "E-PER"
    a = MonitorSet(config)
    a.process_lines(lines(ref) + lines(prod[:300]))
    b = MonitorSet(config)
    b.restore(a.snapshot())
    ra, rb = a.report(), b.report()
    sa, sb = (r["ner/1"]["signals"] for r in (ra, rb))
    assert set(NEW) <= set(sa)
    assert all(r["current_count"] > 0 for r in sa["span_length"]["evidence"]["by_label"])  # recent lengths kept
    for name in NEW:
        assert sa[name]["evidence"] == sb[name]["evidence"], name
        assert sa[name]["windows"] == sb[name]["windows"], name
    ev = sa["tag_validity"]["evidence"]
    assert ev["scheme"] == "bioes" and ev["reference_marked"] == 0 and len(ev["examples"]) == 3
    assert [x["index"] for x in ev["examples"]] == [257, 258, 259]  # the most recent, oldest first
    assert ev["examples"][-1]["tokens"][0] == {"text": prod[259]["tokens"][0]["text"], "tag": "E-PER", "invalid": True}
    assert sa["tag_validity"]["alarms"] == 1
    ra2, rb2 = a.process_lines(lines(prod[300:])), b.process_lines(lines(prod[300:]))
    assert [x.as_dict() for x in ra2.alarms] == [x.as_dict() for x in rb2.alarms]
    assert a.report()["ner/1"]["signals"]["tag_validity"] == b.report()["ner/1"]["signals"]["tag_validity"]
    assert a.report()["ner/1"]["signals"]["span_boundary"] == b.report()["ner/1"]["signals"]["span_boundary"]


def test_growing_spans_move_span_length_and_pos_tags_leave_tag_validity_unavailable() -> None:
    rng = np.random.default_rng(2)
    config = MonitorConfig(disabled_signals=tuple(s for s in SIGNAL_NAMES if s not in NEW))
    ref = [ner_event(i, rng, "iob2", "reference") for i in range(1000)]
    prod = [ner_event(i, rng, "iob2", grow=i >= 500) for i in range(1500)]
    ms = MonitorSet(config)
    out = ms.process_lines(lines(ref) + lines(prod))
    first = {a.signal: a.position - 1000 for a in reversed(out.alarms)}
    assert set(first) == {"span_length"} and first["span_length"] >= 500, first
    pos = [ner_event(i, rng, "iob2", "reference") for i in range(300)]
    for e in pos:
        for t in e["tokens"]:
            t["tag"] = "NOUN"
        e["model"] = "pos"
    ms.process_lines(lines(pos) + lines([{**prod[0], "model": "pos"}]))
    why = ms.report()["pos/1"]["reference"]["unavailable"]["tag_validity"]
    assert "no tagging scheme" in why


def test_event_share_state_round_trip() -> None:
    f = EventShareFeaturizer(0, 0, np.ones(1), 0.0).fitted(3, 400, 50, 1e-7)
    g = EventShareFeaturizer.from_state(json.loads(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                               for k, v in f.state().items()})))
    np.testing.assert_array_equal(f.count_threshold, g.count_threshold)
    assert (g.marked, g.reference_items, g.expected_share) == (3, 400, 4 / 402)


EVIL = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


def test_page_shows_invalid_sequences_crossing_entities_and_span_lengths_by_label_escaped() -> None:
    from nlpmon.observability import pages

    rng = np.random.default_rng(4)
    config = MonitorConfig(disabled_signals=tuple(s for s in SIGNAL_NAMES if s not in NEW))
    ref = [ner_event(i, rng, "iob2", "reference") for i in range(600)]
    prod = [ner_event(i, rng, "iob2") for i in range(300)]
    for e in prod[100:140]:
        e["tokens"][1]["tag"] = "I-LOC"  # after a B-/O tag of another type or O: invalid unless after *-LOC
        e["tokens"][1]["text"] = EVIL
        e["text"] = e["text"].replace(e["text"].split()[1], EVIL, 1)
    for e in prod[150:160]:  # an entity ending inside a token
        e["entities"] = [{"label": EVIL, "start": 0, "end": 1}]
    ms = MonitorSet(config)
    ms.process_lines(lines(ref) + lines(prod))
    rep = ms.report()["ner/1"]
    sig = rep["signals"]
    assert sig["tag_validity"]["evidence"]["examples"] and sig["span_boundary"]["evidence"]["examples"]
    html = pages.model_page("ner/1", rep, 0.0, 5)
    assert EVIL not in html and "&lt;script&gt;" in html
    assert 'id="ner-shape"' in html and '<mark class="invalid"' in html
    assert "I-LOC</b></mark>" in html and "Scheme IOB2" in html
    assert "Entities across token boundaries" in html and "Entity length quantiles" in html
    for r in sig["span_length"]["evidence"]["by_label"]:
        assert f'<th scope="row">{r["label"]}</th>' in html or r["label"] == EVIL


def test_new_signals_are_exported_as_drift_series() -> None:
    from prometheus_client import CollectorRegistry

    from nlpmon.observability.exporter import NlpmonMetrics

    rng = np.random.default_rng(6)
    config = MonitorConfig(disabled_signals=tuple(s for s in SIGNAL_NAMES if s not in NEW))
    ref = [ner_event(i, rng, "biluo", "reference") for i in range(600)]
    prod = [ner_event(i, rng, "biluo") for i in range(200)]
    for e in prod[100:]:
        e["tokens"][0]["tag"] = "L-PER"
    ms = MonitorSet(config)
    out = ms.process_lines(lines(ref) + lines(prod))
    reg = CollectorRegistry()
    NlpmonMetrics(reg).observe_reports(ms.report(), out.alarms)
    m = {"model": "ner", "model_version": "1"}
    for name in NEW:
        assert reg.get_sample_value("nlpmon_drift_score", {**m, "signal": name}) is not None, name
    assert reg.get_sample_value("nlpmon_drift_detected", {**m, "signal": "tag_validity"}) == 1.0
    assert reg.get_sample_value("nlpmon_drift_alarms_total", {**m, "signal": "tag_validity"}) == 1.0


def test_without_the_span_signals_no_token_is_aligned_and_the_other_columns_are_unchanged() -> None:
    rng = np.random.default_rng(8)
    evs = [decode_event(x) for x in lines([ner_event(i, rng, "iob2") for i in range(40)])]
    on, _ = extract_columns(evs)
    off, _ = extract_columns(evs, spans=False)
    assert len(on["span_length"]) > 0 and len(off["span_length"]) == len(off["span_boundary"]) == 0
    for k in on:
        if k not in ("span_length", "span_boundary", SPAN_LABELS):
            np.testing.assert_array_equal(on[k].event, off[k].event)
            assert list(on[k].values) == list(off[k].values) if isinstance(on[k].values, list) else \
                np.array_equal(on[k].values, off[k].values)


def test_batch_offsets_equal_token_by_token_alignment_where_they_hold() -> None:
    from nlpmon.drift.spans import batch_offsets

    rng = np.random.default_rng(9)
    alphabet = ["ab", "c", "é", "日本", ",", ".", "x", "(", ")", "Ω"]
    texts, toks, held = [], [], []
    for _ in range(500):
        words = ["".join(alphabet[int(j)] for j in rng.integers(0, len(alphabet), int(rng.integers(1, 4))))
                 for _ in range(int(rng.integers(1, 8)))]
        text = "".join(w + (" " * int(rng.integers(0, 3))) for w in words).rstrip() or "z"
        pieces = []
        for w in words:  # split some words into two tokens (no space between them)
            if len(w) > 1 and rng.random() < 0.3:
                pieces += [w[:1], w[1:]]
            else:
                pieces.append(w)
        if rng.random() < 0.1 and len(pieces) > 1:  # two tokens merged across a space: not held
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
        texts.append(text)
        toks.append(pieces)
    start, end, ok = batch_offsets(texts, toks)
    i = 0
    for j, (text, tt) in enumerate(zip(texts, toks, strict=True)):
        rows = list(zip(start[i:i + len(tt)].tolist(), end[i:i + len(tt)].tolist(), strict=True))
        i += len(tt)
        if ok[j]:
            assert rows == align_tokens(text, tt), (text, tt)
            held.append(j)
    assert 0.7 * len(texts) < len(held) < len(texts)


def test_batch_offsets_take_lone_surrogates_and_odd_texts() -> None:
    """Texts from JSON may hold lone surrogates (``"\\ud800"``): no encoding error, same offsets."""
    from nlpmon.drift.spans import batch_offsets

    start, end, ok = batch_offsets(["a\ud800 b", "x  y"], [["a\ud800", "b"], ["x", "y"]])
    assert ok.tolist() == [True, True]
    assert list(zip(start.tolist(), end.tolist(), strict=True)) == [(0, 2), (3, 4), (0, 1), (3, 4)]
    e = decode_event(json.dumps({"event_id": "s", "model": "m", "model_version": "1", "text": "aé b",
                                 "entities": [{"label": "X", "start": 0, "end": 2}],
                                 "tokens": [{"text": "aé", "tag": "B-X"}, {"text": "b", "tag": "O"}]}))
    # "\n" is no space: the batch path does not hold for that text, which is aligned token by token
    f = decode_event(json.dumps({"event_id": "t", "model": "m", "model_version": "1", "text": "\n zz",
                                 "entities": [{"label": "X", "start": 2, "end": 3}],
                                 "tokens": [{"text": "zz", "tag": "B-X"}]}))
    cols, _ = extract_columns([e, f])
    assert cols["span_length"].values.tolist() == [1.0, 1.0]
    assert cols["span_boundary"].values.tolist() == [0.0, 1.0]  # [2, 3) ends inside the token [2, 4)


# -- token offsets given by the events (issue 17 follow-up) ---------------------------------------------------
SPAN_KEYS = ("span_length", "span_boundary", SPAN_LABELS)


def span_columns(evs: list[Any]) -> list[tuple[list[int], list[Any]]]:
    cols, _ = extract_columns(evs)
    return [(cols[k].event.tolist(), list(cols[k].values) if isinstance(cols[k].values, list)
             else cols[k].values.tolist()) for k in SPAN_KEYS]


def varied_event(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """Texts for both alignment paths (spaces only; newlines, tabs, sub-word pieces with ``##``; tokens that
    cannot be found), entities on, across and inside tokens."""
    alphabet = ["ab", "c", "é", "日本", ",", "x", "Ω", "de"]
    words = ["".join(alphabet[int(j)] for j in rng.integers(0, len(alphabet), int(rng.integers(1, 4))))
             for _ in range(int(rng.integers(1, 9)))]
    seps = [" " * int(rng.integers(1, 3)) if rng.random() < 0.85 else "\n" for _ in words]
    text = "".join(w + s for w, s in zip(words, seps, strict=True)).rstrip()
    toks: list[str] = []
    for w in words:
        if len(w) > 1 and rng.random() < 0.3:
            toks += [w[:1], "##" + w[1:]]
        else:
            toks.append(w)
    if rng.random() < 0.05:
        toks.append("missing")  # not in the text: the event does not align
    ents = []
    for _ in range(int(rng.integers(0, 4))):
        s = int(rng.integers(0, len(text)))
        ents.append({"label": ["PER", "LOC"][int(rng.integers(2))], "start": s,
                     "end": int(rng.integers(s, len(text) + 1))})
    ents.sort(key=lambda x: x["start"])
    return {"event_id": f"v{i}", "model": "ner", "model_version": "1", "text": text, "entities": ents,
            "tokens": [{"text": t, "tag": "O"} for t in toks]}


def with_offsets(raw: dict[str, Any], offsets: list[tuple[int, int]]) -> dict[str, Any]:
    return {**raw, "tokens": [{**t, "start": s, "end": e} for t, (s, e) in zip(raw["tokens"], offsets, strict=True)]}


def test_given_offsets_measure_spans_exactly_as_the_alignment_does() -> None:
    """Oracle: the same events, with their aligned positions as offsets (on every other event, so both paths
    share batches) or without, give identical span columns."""
    rng = np.random.default_rng(17)
    raws = [varied_event(i, rng) for i in range(600)]
    plain = [decode_event(json.dumps(r)) for r in raws]
    given, n_given = [], 0
    for j, r in enumerate(raws):
        offsets = align_tokens(r["text"], [t["text"] for t in r["tokens"]])
        if offsets is not None and j % 2 == 0:
            r = with_offsets(r, offsets)
            n_given += 1
        given.append(decode_event(json.dumps(r)))
    assert n_given > 200 and sum(len(e.entities) for e in plain) > 500
    want = span_columns(plain)
    assert span_columns(given) == want
    assert len(want[0][0]) > 300 and 0 < sum(want[1][1]) < len(want[1][1])  # measured, some crossing
    # every event with offsets: no alignment at all, same columns on the events that align
    aligned = [j for j, r in enumerate(raws) if align_tokens(r["text"], [t["text"] for t in r["tokens"]])]
    only = [decode_event(json.dumps(with_offsets(raws[j], align_tokens(raws[j]["text"],
                                                                       [t["text"] for t in raws[j]["tokens"]]))))
            for j in aligned]
    assert span_columns(only) == span_columns([plain[j] for j in aligned])


def offsets_event(tokens: list[dict[str, Any]], text: str | None = "ab cd ef",
                  ents: tuple[tuple[int, int], ...] = ((0, 4),)) -> Any:
    return decode_event(json.dumps({"event_id": "o", "model": "m", "text": text, "tokens": tokens,
                                    "entities": [{"label": "X", "start": s, "end": e} for s, e in ents]}))


def test_trusted_offsets_are_used_whatever_the_token_texts() -> None:
    # token texts that cannot be found in the text: not measured without offsets, measured with them
    toks = [{"text": "A", "tag": "O"}, {"text": "B", "tag": "O"}, {"text": "C", "tag": "O"}]
    assert span_columns([offsets_event(toks)])[0] == ([], [])
    spans = [(0, 2), (3, 5), (6, 8)]
    got = span_columns([offsets_event([{**t, "start": s, "end": e} for t, (s, e) in zip(toks, spans, strict=True)])])
    assert got[0] == ([0], [2.0]) and got[1] == ([0], [1.0])  # [0, 4) ends inside the token [3, 5)
    # an event without text: its offsets are used all the same (the text bound applies only to a text)
    no_text = offsets_event([{**t, "start": s, "end": e} for t, (s, e) in zip(toks, spans, strict=True)], None)
    assert span_columns([no_text])[0] == ([0], [2.0])


@pytest.mark.parametrize(("spans", "why"), [
    ([(0, 2), (3, 5), (6, 9)], "an end beyond the text"),
    ([(3, 5), (0, 2), (6, 8)], "tokens out of order"),
    ([(0, 3), (2, 5), (6, 8)], "overlapping tokens"),
    ([(0, 2), None, (6, 8)], "a token without offsets"),
])
def test_untrusted_offsets_are_aligned_as_without_them(spans: list[tuple[int, int] | None], why: str) -> None:
    words = ["ab", "cd", "ef"]
    toks = [{"text": w, "tag": "O", **({} if se is None else {"start": se[0], "end": se[1]})}
            for w, se in zip(words, spans, strict=True)]
    bare = [{"text": w, "tag": "O"} for w in words]
    want = span_columns([offsets_event(bare, ents=((0, 4), (3, 8)))])
    assert want[0] == ([0, 0], [2.0, 2.0]), why
    got = span_columns([offsets_event(toks, ents=((0, 4), (3, 8)))])
    assert got == want, why
    # in a batch with trusted events around it: each event on its own path, in event order
    good = offsets_event([{**t, "start": s, "end": e} for t, (s, e) in zip(bare, [(0, 2), (3, 5), (6, 8)],
                                                                          strict=True)], ents=((3, 5),))
    got = span_columns([good, offsets_event(toks, ents=((0, 4), (3, 8))), good])
    assert got[0] == ([0, 1, 1, 2], [1.0, 2.0, 2.0, 1.0]), why


def test_offsets_of_any_size_or_missing_never_break_the_batch() -> None:
    """The contract takes integers of any size: offsets no text can reach leave their entity (or the given
    token offsets) unused, and the rest of the batch is measured as without them."""
    huge = [2**63, 2**64, 10**30, 10**400]
    evs = [decode_event(json.dumps({"event_id": str(k), "model": "m", "text": "ab cd",
                                    "entities": [{"label": "X", "start": h, "end": h + 3}, {"label": "Y", "start": 0,
                                                                                           "end": 2}]}))
           for k, h in enumerate(huge)]
    evs.append(offsets_event([{"text": "ab", "tag": "O", "start": 0, "end": 2},
                              {"text": "cd", "tag": "O", "start": 3, "end": 10**30},
                              {"text": "ef", "tag": "O", "start": 10**30, "end": 10**30}]))  # aligned instead
    cols = span_columns(evs)
    assert cols[0] == ([0, 1, 2, 3, 4], [2.0, 2.0, 2.0, 2.0, 2.0])  # Y in characters; the token event in tokens
    assert cols[2] == ([0, 1, 2, 3, 4], ["Y", "Y", "Y", "Y", "X"]) and cols[1] == ([4], [1.0])
