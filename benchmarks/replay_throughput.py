"""Replay throughput and the monitor's own cost, beside the pure decode rate of the same file.

Prints a markdown table. Single core: run with OPENBLAS_NUM_THREADS=1 (``make bench`` does).
Synthetic events (``nlpmon.demo``), so it runs anywhere; ``--data DIR`` adds rows for real NER data.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/replay_throughput.py [--events 20000]
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson  # the reference parser (dev extra)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ner_faults import tag_event

from nlpmon.demo import SyntheticStream
from nlpmon.drift.spans import align_tokens
from nlpmon.events import decode_event
from nlpmon.monitor.config import MonitorConfig
from nlpmon.monitor.monitor_set import MonitorSet
from nlpmon.monitor.signals import extract_columns
from nlpmon.state import encode_state

BATCH = 2000


def write_stream(path: Path, n: int, dim: int, b64: bool, split: str, seed: int, tags: str | None = None,
                 offsets: bool = False) -> None:
    """Synthetic events; with ``tags`` (a scheme) their POS tags are replaced by entity tags in it; with
    ``offsets`` their tokens carry ``start``/``end`` (as the builders write them)."""
    s = SyntheticStream(seed=seed, dim=dim, base64_embeddings=b64)
    with path.open("w") as fh:
        for e in s.events(n, split):
            e = tag_event(e, tags) if tags else e
            fh.write(json.dumps(with_token_offsets(e) if offsets else e) + "\n")


def with_token_offsets(e: dict[str, Any]) -> dict[str, Any]:
    """The event with each token's character offsets in its text (unchanged when its tokens do not align)."""
    toks = e.get("tokens") or []
    found = align_tokens(e.get("text") or "", [t.get("text") for t in toks]) if toks else None
    if found is None:
        return e
    return {**e, "tokens": [{**t, "start": a, "end": b} for t, (a, b) in zip(toks, found, strict=True)]}


def bare_decode(line: bytes) -> tuple[Any, np.ndarray]:
    """The floor a JSON consumer cannot go under: ``orjson.loads`` and the document embedding as a float32
    array (base64 decoded, or the list converted), no validation."""
    doc = orjson.loads(line)
    emb = doc["embedding"]
    if isinstance(emb, dict):
        return doc, np.frombuffer(base64.b64decode(emb["base64"]), np.float32)
    return doc, np.asarray(emb, np.float32)


def read_lines(path: Path) -> list[bytes]:
    return [line.rstrip(b"\n") for line in path.open("rb")]


def best_of(fn, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(fns: dict[str, Any], rounds: int) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds that run them all in turn."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure(dim: int, b64: bool, n: int, tmp: Path) -> dict[str, float]:
    ref_path, ev_path = tmp / f"ref-{dim}-{b64}.jsonl", tmp / f"ev-{dim}-{b64}.jsonl"
    write_stream(ref_path, 3000, dim, b64, "reference", seed=1)
    write_stream(ev_path, n, dim, b64, "production", seed=1)
    ref, lines = read_lines(ref_path), read_lines(ev_path)
    config = MonitorConfig()

    # interleaved rounds, best of each: a burst of load on a shared machine hits all three alike
    decodes = interleaved({"orjson": lambda: [orjson.loads(x) for x in lines],
                           "bare": lambda: [bare_decode(x) for x in lines],
                           "decode": lambda: [decode_event(x) for x in lines]}, rounds=5)
    t_orjson, t_bare, t_decode = decodes["orjson"], decodes["bare"], decodes["decode"]
    events = [decode_event(x) for x in lines]

    base = MonitorSet(config)
    t0 = time.perf_counter()
    base.process_lines(ref)
    base.process_lines(lines[:1])  # calibrates
    t_cal = time.perf_counter() - t0
    snapshot = base.snapshot()

    def monitor_only() -> None:
        ms = MonitorSet(config)
        ms.restore(snapshot)
        for i in range(0, n, BATCH):
            ms.process_events(events[i:i + BATCH], list(range(min(BATCH, n - i))))

    def end_to_end() -> None:
        ms = MonitorSet(config)
        ms.restore(snapshot)
        for i in range(0, n, BATCH):
            ms.process_lines(lines[i:i + BATCH])

    t_mon = best_of(monitor_only)
    t_extract = best_of(lambda: [extract_columns(events[i:i + BATCH]) for i in range(0, n, BATCH)])
    t_e2e = best_of(end_to_end)
    tracemalloc.start()
    ms = MonitorSet(config)
    ms.restore(snapshot)
    for i in range(0, n, BATCH):
        ms.process_lines(lines[i:i + BATCH])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = len(ms.snapshot())
    return {"dim": dim, "b64": b64, "decode_rate": n / t_decode, "e2e_rate": n / t_e2e,
            "ratio": t_decode / t_e2e, "orjson_us": 1e6 * t_orjson / n, "decode_us": 1e6 * t_decode / n,
            "bare_rate": n / t_bare, "bare_ratio": t_bare / t_e2e,
            "monitor_us": 1e6 * t_mon / n, "extract_us": 1e6 * t_extract / n,
            "calibration_s": t_cal, "peak_mb": peak / 2**20, "state_mb": state / 2**20}


def breakdown(n: int, tmp: Path) -> list[tuple[str, float]]:
    """Per-part cost of the monitor (µs/event) for 384-dim base64 events: where the time goes. Runs the real
    monitor (``MonitorSet.process_lines``) with each signal's window update timed in place, so every signal the
    monitor runs is listed; "features and the rest" is the monitor total minus the window updates."""
    ref_path, ev_path = tmp / "bd-ref.jsonl", tmp / "bd-ev.jsonl"
    write_stream(ref_path, 3000, 384, True, "reference", seed=1)
    write_stream(ev_path, n, 384, True, "production", seed=1)
    lines = read_lines(ev_path)
    ms = MonitorSet(MonitorConfig())
    ms.process_lines(read_lines(ref_path))
    ms.process_lines(lines[:1])
    mon = ms.monitors[("demo-ner", "1")]
    acc: dict[str, float] = {}

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = fn(*a, **k)
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    for name, win in mon.windows.items():
        for method in ("update_rows", "update"):
            setattr(win, method, timed(f"{name}: windows + statistics", getattr(win, method)))
    import nlpmon.monitor.model_monitor as model_monitor

    flatten = "flatten events to columns (extract_columns)"
    model_monitor.extract_columns = timed(flatten, extract_columns)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for x in lines:
        decode_event(x)
    decode = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            ms.process_lines(lines[i:i + BATCH])
        total = time.perf_counter() - t0 - decode  # process_lines decodes too
    finally:
        model_monitor.extract_columns = extract_columns  # type: ignore[attr-defined]
    rows = [("decode (msgspec + checks), for scale", decode), ("monitor without decode", total),
            ("  features and the rest", total - sum(acc.values()))]
    rows += [(f"  {k}", v) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])]
    return [(k, 1e6 * v / n) for k, v in rows]


def quality_costs(n: int, tmp: Path) -> list[tuple[str, str]]:
    """What the ground-truth join adds (384-dim base64 events): predictions in, labels in, report, state; the
    label rows with the partial-match schemes off (the exact figures alone) and on, in the same run. Labels are
    the predictions with 30 % of the boundaries moved by a character and 10 % of the types swapped, so the
    partial matching meets overlaps of every kind."""
    import json
    import random

    from nlpmon.quality import QualityConfig, QualitySet, decode_ground_truth

    ev_path = tmp / "q-ev.jsonl"
    write_stream(ev_path, n, 384, True, "production", seed=2)
    events = [decode_event(x) for x in read_lines(ev_path)]
    rng = random.Random(2)
    kinds = sorted({x.label for e in events for x in e.entities}) or ["X"]

    def gold(x: Any) -> dict[str, Any]:
        start, end, label = int(x.start), int(x.end), x.label
        if rng.random() < 0.3:
            end = max(start + 1, end + rng.choice((-1, 1)))
        if rng.random() < 0.1:
            label = rng.choice(kinds)
        return {"label": label, "start": start, "end": end}

    labels = [decode_ground_truth(json.dumps({"event_id": e.event_id, "model": e.model,
                                              "entities": [gold(x) for x in e.entities]})) for e in events]

    def predictions(config: QualityConfig) -> QualitySet:
        qs = QualitySet(config)
        for i in range(0, n, BATCH):
            qs.add_predictions(events[i:i + BATCH], now=float(i))
        return qs

    rows: list[tuple[str, str]] = []
    t_pred = best_of(lambda: predictions(QualityConfig()))
    qs = predictions(QualityConfig())
    t0 = time.perf_counter()
    state = len(encode_state(qs.state()))
    t_state = time.perf_counter() - t0
    rows.append(("predictions into the join", f"{1e6 * t_pred / n:.2f} µs/event"))
    per_label: dict[bool, float] = {}
    for partial in (False, True):
        config = QualityConfig(partial_match=partial, window_documents=max(n, 1))
        label_times: list[float] = []
        for _ in range(3):  # best of 3 of the label step alone, each on fresh pending predictions
            qs = predictions(config)
            t0 = time.perf_counter()
            for i in range(0, n, BATCH):
                qs.add_labels(labels[i:i + BATCH], now=float(n + i))
            label_times.append(time.perf_counter() - t0)
        per_label[partial] = min(label_times) / n
        t0 = time.perf_counter()
        qs.report()
        t_report = time.perf_counter() - t0
        size = len(encode_state(qs.state()))
        what = "on" if partial else "off (exact figures only)"
        rows += [(f"labels joined (window, matching), partial matching {what}", f"{1e6 * per_label[partial]:.2f} "
                  "µs/label"),
                 (f"report of {n:,} labelled documents, partial matching {what}", f"{1e3 * t_report:.1f} ms"),
                 (f"state with {n:,} labelled documents, partial matching {what}", f"{size / 2**20:.2f} MB")]
    rows.append(("partial matching: labels joined, on / off", f"{per_label[True] / per_label[False]:.2f}x"))
    rows.append((f"state with {n:,} pending predictions", f"{state / 2**20:.1f} MB, encoded in {1e3 * t_state:.0f} ms"))
    return rows


PARTIAL_DRIFT_SIGNALS = ("embedding_outliers", "embedding_clusters", "entity_label_share", "token_tag_share")


NER_SHAPE_SIGNALS = ("tag_validity", "span_length", "span_boundary")


def partial_drift_cost(n: int, tmp: Path, rounds: int = 7, signals: tuple[str, ...] = PARTIAL_DRIFT_SIGNALS,
                       tags: str | None = None, offsets: bool = False) -> tuple[float, float]:
    """Monitor µs/event with ``signals`` on and off (384-dim base64, batches of 2,000), the two
    configurations alternating in the same process; best round of each. ``tags``: entity tags in that
    scheme instead of the synthetic POS tags (for tag_validity); ``offsets``: tokens with offsets."""
    ref_path, ev_path = tmp / f"pd-ref-{tags}-{offsets}.jsonl", tmp / f"pd-ev-{tags}-{offsets}.jsonl"
    write_stream(ref_path, 3000, 384, True, "reference", seed=1, tags=tags, offsets=offsets)
    write_stream(ev_path, n, 384, True, "production", seed=1, tags=tags, offsets=offsets)
    ref, lines = read_lines(ref_path), read_lines(ev_path)
    events = [decode_event(x) for x in lines]
    snapshots = {}
    for on in (True, False):
        config = MonitorConfig(disabled_signals=() if on else signals)
        ms = MonitorSet(config)
        ms.process_lines(ref)
        ms.process_lines(lines[:1])
        if on:
            unavailable = set(signals) & set(ms.monitors[("demo-ner", "1")].profile.unavailable)  # type: ignore[union-attr]
            assert not unavailable, f"not running, nothing to measure: {unavailable}"
        snapshots[on] = (config, ms.snapshot())

    def run(on: bool) -> float:
        config, snap = snapshots[on]
        ms = MonitorSet(config)
        ms.restore(snap)
        t0 = time.perf_counter()
        for i in range(0, n, BATCH):
            ms.process_events(events[i:i + BATCH], list(range(min(BATCH, n - i))))
        return time.perf_counter() - t0

    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for on in (True, False):
            best[on] = min(best[on], run(on))
    return 1e6 * best[True] / n, 1e6 * best[False] / n


def partial_drift_parts(n: int, tmp: Path) -> list[tuple[str, float]]:
    """µs/event of each piece of work the partial-drift signals add, timed inside one monitor's batches
    (their rows reuse the embedding scores and label counts the other signals compute anyway)."""
    from nlpmon.drift.clusters import ClusterFeaturizer
    from nlpmon.drift.featurizers import event_rows
    from nlpmon.drift.signal import SignalModel, SignalWindow

    ref_path, ev_path = tmp / "pdp-ref.jsonl", tmp / "pdp-ev.jsonl"
    write_stream(ref_path, 3000, 384, True, "reference", seed=1)
    write_stream(ev_path, n, 384, True, "production", seed=1)
    lines = read_lines(ev_path)
    events = [decode_event(x) for x in lines]
    ms = MonitorSet(MonitorConfig())
    ms.process_lines(read_lines(ref_path))
    ms.process_lines(lines[:1])
    mon = ms.monitors[("demo-ner", "1")]
    acc: dict[str, float] = {}

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = fn()
        acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
        return out

    emb = mon.windows["embedding"].model.featurizer
    one_level: dict[str, SignalWindow] = {}
    for i in range(0, n, BATCH):
        ev = events[i:i + BATCH]
        k = len(ev)
        cols, times = extract_columns(ev)
        col = cols["embedding"]
        timed("embedding rows without scores (reference for scale)", lambda col=col: emb.transform(col.values))
        item_rows, raw = timed("embedding rows with the unclipped scores",
                               lambda col=col: emb.transform_scored(col.values))
        win = mon.windows["embedding_outliers"]
        feat = win.model.featurizer

        def outliers(win=win, feat=feat, col=col, raw=raw, k=k, times=times, ev=ev) -> None:  # type: ignore[no-untyped-def]
            marks = feat.marks(raw)
            rows = np.bincount(col.event, weights=marks, minlength=k)[:, None]
            items = np.bincount(col.event, minlength=k).astype(np.float64)
            win.update_rows(rows, items, times)
            mon.evidence.share_history.add(mon.monitored_events, rows[:, 0], items)
            mon.evidence.track_marked(marks, col.event, raw, ev, mon.monitored_events)

        timed("embedding_outliers: marks, 6 windows every 5 events, page evidence", outliers)
        cwin = mon.windows["embedding_clusters"]
        cfeat = cwin.model.featurizer

        def clusters(cwin=cwin, cfeat=cfeat, col=col, raw=raw, item_rows=item_rows, k=k,  # type: ignore[no-untyped-def]
                     times=times) -> None:
            positions, values = cfeat.marked_rows(item_rows, raw, col.event)
            cwin.update_sparse(k, positions, values, np.bincount(col.event, minlength=k).astype(np.float64), times)

        timed(f"embedding_clusters: marked directions at {len(cfeat.levels)} levels, 6 windows every 10 events",
              clusters)
        one = one_level.setdefault("win", SignalWindow(SignalModel(
            "one", ClusterFeaturizer(cfeat.taus[-1:], cfeat.levels[-1:], cfeat.k), cwin.model.windows,
            cwin.model.thresholds[:, -1:], cwin.model.false_alarm_rate, cwin.model.reference_events), 50, None))
        timed(f"(for scale) embedding_clusters at its widest level alone ({cfeat.levels[-1]:g}), as before the ladder",
              lambda one=one, cfeat=one.model.featurizer, col=col, raw=raw, item_rows=item_rows, k=k, times=times:
              one.update_sparse(k, *cfeat.marked_rows(item_rows, raw, col.event),
                                np.bincount(col.event, minlength=k).astype(np.float64), times))
        for name, source in (("entity_label_share", "entity_label"), ("token_tag_share", "token_tag")):
            rows, items = event_rows(mon.windows[source].model.featurizer, cols[source], k)  # shared, not counted
            timed(f"{name}: windows + statistics (rows shared with {source})",
                  lambda name=name, rows=rows, items=items, times=times: mon.windows[name].update_rows(rows, items,
                                                                                                        times))
    return [(name, 1e6 * v / n) for name, v in acc.items()]


def ner_shape_parts(n: int, tmp: Path, rounds: int = 5) -> list[tuple[str, float]]:
    """µs/event of the work the tag-validity and span-shape signals add outside their windows: the token
    alignment in the flattening (extract_columns with and without it, tokens without and with offsets) and
    the tag-validity marks."""
    from nlpmon.drift.shares import TagValidityFeaturizer, unit_rows

    path, given = tmp / "ns-parts.jsonl", tmp / "ns-parts-offsets.jsonl"
    write_stream(path, n, 384, True, "production", seed=1, tags="iob2")
    write_stream(given, n, 384, True, "production", seed=1, tags="iob2", offsets=True)
    events = [decode_event(x) for x in read_lines(path)]
    chunks = [events[i:i + BATCH] for i in range(0, n, BATCH)]
    with_offsets = [decode_event(x) for x in read_lines(given)]
    chunks_o = [with_offsets[i:i + BATCH] for i in range(0, n, BATCH)]
    feat = TagValidityFeaturizer(0, 0, np.ones(1), 0.0, scheme="iob2")
    cols = [extract_columns(c)[0] for c in chunks]
    from nlpmon.events.decode import _check_token_spans

    toks, toks_o = [e.tokens for e in events if e.tokens], [e.tokens for e in with_offsets if e.tokens]
    best = {"on": float("inf"), "off": float("inf"), "on_o": float("inf"), "tags": float("inf"),
            "check": float("inf"), "check_o": float("inf")}
    for _ in range(rounds):
        for key, fn in (("check", lambda: [_check_token_spans(t) for t in toks]),
                        ("check_o", lambda: [_check_token_spans(t) for t in toks_o]),
                        ("on", lambda: [extract_columns(c, True) for c in chunks]),
                        ("off", lambda: [extract_columns(c, False) for c in chunks]),
                        ("on_o", lambda: [extract_columns(c, True) for c in chunks_o]),
                        ("tags", lambda: [unit_rows(c["token_tag"].event, feat.bad_units(c["token_tag"]), len(c[
                            "token_tag"].event)) for c in cols])):
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
    us = {k: 1e6 * v / n for k, v in best.items()}
    return [("flatten events to columns, token alignment off (for scale)", us["off"]),
            ("token alignment and span measures (flatten on - off)", us["on"] - us["off"]),
            ("tokens with offsets: offset checks and span measures (flatten on - off)", us["on_o"] - us["off"]),
            ("tag_validity: tag codes, validity, per-event rows", us["tags"]),
            ("decoder: token start <= end check, tokens without offsets", us["check"]),
            ("decoder: token start <= end check, tokens with offsets", us["check_o"])]


def blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')} x{i['num_threads']}"
                         for i in threadpool_info())
    except ImportError:  # pragma: no cover
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--only-partial-drift", action="store_true", help="only the partial-drift cost row")
    ap.add_argument("--join-only", action="store_true", help="only the ground-truth join's table")
    ap.add_argument("--replay-only", action="store_true",
                    help="only the replay tables and the monitor's parts (384-dim rows; no partial-drift or join "
                         "tables): for before/after runs, with this script under each tree's Python")
    ap.add_argument("--only-ner-shape", action="store_true",
                    help="only the cost of the tag-validity and span-shape signals (on / off, IOB2 tags)")
    args = ap.parse_args()
    if args.only_ner_shape:
        rows = []
        with tempfile.TemporaryDirectory() as d:
            for offsets in (False, True):
                rows.append((offsets, *partial_drift_cost(args.events, Path(d), signals=NER_SHAPE_SIGNALS,
                                                          tags="iob2", offsets=offsets)))
        print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS: {blas()}; {args.events} events, "
              "synthetic events with IOB2 entity tags, 384-dim base64, batches of 2,000, best of 7 alternating "
              "rounds\n")
        print("| tokens | monitor µs/event, on | off | added by tag_validity, span_length, span_boundary |")
        print("|---|---|---|---|")
        for offsets, on, off in rows:
            print(f"| {'with start/end' if offsets else 'text only'} | {on:.2f} | {off:.2f} | {on - off:.2f} "
                  f"({100 * (on - off) / off:.1f} %) |")
        with tempfile.TemporaryDirectory() as d:
            parts = ner_shape_parts(args.events, Path(d))
        print("\n| part | µs/event |\n|---|---|")
        for name, us in parts:
            print(f"| {name} | {us:.2f} |")
        return 0
    if args.only_partial_drift:
        with tempfile.TemporaryDirectory() as d:
            on, off = partial_drift_cost(args.events, Path(d))
        print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS: {blas()}; {args.events} events\n")
        print("| monitor µs/event, on | off | added by the four partial-drift signals |")
        print("|---|---|---|")
        print(f"| {on:.2f} | {off:.2f} | {on - off:.2f} |")
        with tempfile.TemporaryDirectory() as d:
            parts = partial_drift_parts(args.events, Path(d))
        print("\n| part | µs/event |\n|---|---|")
        for name, us in parts:
            print(f"| {name} | {us:.2f} |")
        return 0
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, BLAS: {blas()}")
    print(f"{args.events} events per run, batches of {BATCH}, best of 3; reference 3,000 events\n")
    print("| embedding | decode only (ev/s) | replay (ev/s) | replay / decode | monitor µs/event "
          "(of which flattening) | calibration s | peak MB (replay) | snapshot MB |")
    print("|---|---|---|---|---|---|---|---|")
    bare: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        for dim in () if args.join_only else (384,) if args.replay_only else (384, 768):
            for b64 in (False, True):
                r = measure(dim, b64, args.events, Path(d))
                print(f"| {dim}-dim {'base64' if b64 else 'JSON list'} | {r['decode_rate']:,.0f} | "
                      f"{r['e2e_rate']:,.0f} | {r['ratio']:.2f} | {r['monitor_us']:.1f} ({r['extract_us']:.1f}) | "
                      f"{r['calibration_s']:.1f} | {r['peak_mb']:.0f} | {r['state_mb']:.1f} |")
                bare.append(r)
        if bare:
            print("\nThe decoder against orjson (same lines, best of 5 interleaved rounds): `orjson.loads` alone, and "
                  "the bare decode (`orjson.loads` + the embedding to a float32 array, no validation):\n")
            print("| embedding | orjson.loads µs/event | decoder µs/event | decoder / orjson.loads | bare decode "
                  "(ev/s) | replay / bare decode |")
            print("|---|---|---|---|---|---|")
            for r in bare:
                print(f"| {r['dim']}-dim {'base64' if r['b64'] else 'JSON list'} | {r['orjson_us']:.1f} | "
                      f"{r['decode_us']:.1f} | {r['decode_us'] / r['orjson_us']:.2f} | {r['bare_rate']:,.0f} | "
                      f"{r['bare_ratio']:.2f} |")
        if not args.join_only:
            print("\nWhere the monitor's time goes (384-dim base64, batches of 2,000):\n")
            print("| part | µs/event |")
            print("|---|---|")
            for name, us in breakdown(args.events, Path(d)):
                print(f"| {name} | {us:.2f} |")
            if args.replay_only:
                print(f"\nmax RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
                return 0
            on, off = partial_drift_cost(args.events, Path(d))
            print("\nThe partial-drift signals (embedding_outliers, embedding_clusters, entity_label_share, "
                  "token_tag_share), on and "
                  "off in the same run (384-dim base64, batches of 2,000, best of 7 alternating rounds):\n")
            print("| monitor µs/event, on | off | added by the four signals |")
            print("|---|---|---|")
            print(f"| {on:.2f} | {off:.2f} | {on - off:.2f} |\n")
            print("| part | µs/event |\n|---|---|")
            for name, us in partial_drift_parts(args.events, Path(d)):
                print(f"| {name} | {us:.2f} |")
        print("\nWhat the ground-truth join adds (384-dim base64 events, batches of 2,000; compare with the "
              "monitor µs/event above):\n")
        print("| part | cost |")
        print("|---|---|")
        for name, cost in quality_costs(args.events, Path(d)):
            print(f"| {name} | {cost} |")
    print(f"\nmax RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
