"""The merge of members' expositions (service/observability/aggregate.py): pure, through prometheus_client's
own writer and parser, with exact values (sums of small integers and dyadic fractions are exact)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nlpmon.observability.aggregate import exposition, merge, parse, sum_families, summed_only

M = ("model", "model_version")


def member(events: dict[tuple[str, str], int], last_event: dict[tuple[str, str], float],
           scores: dict[tuple[str, str], float], lag: dict[str, int], batches: list[float]) -> str:
    reg = CollectorRegistry()
    ev = Counter("nlpmon_events_total", "events", [*M, "split"], registry=reg)
    ts = Gauge("nlpmon_last_event_timestamp_seconds", "newest", M, registry=reg)
    sc = Gauge("nlpmon_drift_score", "score", [*M, "signal"], registry=reg)
    lg = Gauge("nlpmon_consumer_lag", "lag", ["topic", "partition"], registry=reg)
    Gauge("nlpmon_assigned_partitions", "assigned", registry=reg).set(len(lag))
    h = Histogram("nlpmon_batch_seconds", "batch", buckets=(0.5, 1.0), registry=reg)
    Counter("nlpmon_member_restarts_total", "parent only", ["member"], registry=reg)
    for (m, v), n in events.items():
        ev.labels(m, v, "production").inc(n)
    for (m, v), t in last_event.items():
        ts.labels(m, v).set(t)
    for (m, v), s in scores.items():
        sc.labels(m, v, "embedding").set(s)
    for p, n in lag.items():
        lg.labels("t", p).set(n)
    for b in batches:
        h.observe(b)
    return generate_latest(reg).decode()


def values(families: list) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of the merged exposition, written and read back as a scraper reads them."""
    text = exposition(families).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if not s.name.endswith("_created")}


def test_counters_and_histograms_sum_gauges_follow_the_owner_and_process_gauges_get_a_member_label() -> None:
    a = member({("ner", "1"): 30, ("cls", "2"): 5}, {("ner", "1"): 100.0, ("cls", "2"): 50.0},
               {("ner", "1"): 0.25, ("cls", "2"): 3.5}, {"0": 4, "1": 0}, [0.25, 0.75])
    # b took ner over (newer event) while a still shows it: b's ner gauges win, a's cls gauges stay a's
    b = member({("ner", "1"): 12}, {("ner", "1"): 101.0}, {("ner", "1"): 1.5}, {"2": 7, "3": 1}, [2.0])
    got = values(merge({"0": parse(a), "1": parse(b)}, exclude=("nlpmon_member_restarts_total",)))
    assert got[("nlpmon_events_total", (("model", "ner"), ("model_version", "1"), ("split", "production")))] == 42
    assert got[("nlpmon_events_total", (("model", "cls"), ("model_version", "2"), ("split", "production")))] == 5
    sig = (("model", "ner"), ("model_version", "1"), ("signal", "embedding"))
    assert got[("nlpmon_drift_score", sig)] == 1.5
    assert got[("nlpmon_drift_score", (("model", "cls"), ("model_version", "2"), ("signal", "embedding")))] == 3.5
    assert got[("nlpmon_last_event_timestamp_seconds", (("model", "ner"), ("model_version", "1")))] == 101.0
    assert got[("nlpmon_batch_seconds_count", ())] == 3 and got[("nlpmon_batch_seconds_sum", ())] == 3.0
    assert got[("nlpmon_batch_seconds_bucket", (("le", "0.5"),))] == 1
    assert got[("nlpmon_batch_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("nlpmon_batch_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("nlpmon_consumer_lag", (("member", "0"), ("partition", "0"), ("topic", "t")))] == 4
    assert got[("nlpmon_consumer_lag", (("member", "1"), ("partition", "2"), ("topic", "t")))] == 7
    assert got[("nlpmon_assigned_partitions", (("member", "0"),))] == 2
    assert got[("nlpmon_assigned_partitions", (("member", "1"),))] == 2
    assert not any(name.startswith("nlpmon_member_restarts") for name, _ in got)
    # one value per model series: no gauge of a model appears twice
    assert sum(1 for name, labels in got if name == "nlpmon_drift_score") == 2


def test_a_missing_member_keeps_its_counters_and_loses_its_gauges() -> None:
    a = member({("ner", "1"): 30}, {("ner", "1"): 100.0}, {("ner", "1"): 0.5}, {"0": 1}, [0.25])
    b_before = member({("cls", "1"): 8}, {("cls", "1"): 90.0}, {("cls", "1"): 2.0}, {"1": 2}, [0.25, 0.25])
    kept = [summed_only(parse(b_before))]  # what b showed last, before it stopped answering
    got = values(merge({"0": parse(a)}, kept))
    assert got[("nlpmon_events_total", (("model", "cls"), ("model_version", "1"), ("split", "production")))] == 8
    assert got[("nlpmon_events_total", (("model", "ner"), ("model_version", "1"), ("split", "production")))] == 30
    assert got[("nlpmon_batch_seconds_count", ())] == 3
    assert ("nlpmon_drift_score", (("model", "cls"), ("model_version", "1"), ("signal", "embedding"))) not in got
    assert ("nlpmon_consumer_lag", (("member", "1"), ("partition", "1"), ("topic", "t"))) not in got
    # nobody answered: the counters are still there (never a drop), no gauge
    nobody = values(merge({}, kept))
    assert nobody[("nlpmon_events_total", (("model", "cls"), ("model_version", "1"), ("split", "production")))] == 8
    assert not any(name == "nlpmon_drift_score" for name, _ in nobody)


def test_incarnations_of_a_restarted_member_add_up_and_created_takes_the_earliest() -> None:
    first = parse(member({("ner", "1"): 10}, {}, {}, {}, []))
    second = parse(member({("ner", "1"): 4}, {}, {}, {}, []))
    carried = sum_families([summed_only(first)])
    fams = sum_families([carried, summed_only(second)])
    ev = next(f for f in fams if f.name == "nlpmon_events")
    total = [s.value for s in ev.samples if s.name == "nlpmon_events_total"]
    created = [s.value for s in ev.samples if s.name == "nlpmon_events_created"]
    first_created = [s.value for f in first if f.name == "nlpmon_events" for s in f.samples
                     if s.name == "nlpmon_events_created"]
    assert total == [14.0] and created == first_created


def test_ties_go_to_the_first_member_and_models_without_a_timestamp_to_the_first_showing_them() -> None:
    a = member({}, {("ner", "1"): 100.0}, {("ner", "1"): 0.5, ("x", "1"): 0.25}, {}, [])
    b = member({}, {("ner", "1"): 100.0}, {("ner", "1"): 0.75, ("x", "1"): 0.125}, {}, [])
    got = values(merge({"0": parse(a), "1": parse(b)}))
    assert got[("nlpmon_drift_score", (("model", "ner"), ("model_version", "1"), ("signal", "embedding")))] == 0.5
    assert got[("nlpmon_drift_score", (("model", "x"), ("model_version", "1"), ("signal", "embedding")))] == 0.25
    got_rev = values(merge({"1": parse(b), "0": parse(a)}))
    assert got_rev[("nlpmon_drift_score", (("model", "x"), ("model_version", "1"),
                                           ("signal", "embedding")))] == 0.125
