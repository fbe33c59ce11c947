"""Garbage-collector hygiene of the service (service/app/gc_watch.py): start-up objects frozen once, long
collections logged, and string items of reference samples kept where the collector does not walk them."""

from __future__ import annotations

import gc
import json
import logging

import numpy as np
import pytest

from nlpmon.app.gc_watch import freeze_startup, watch_collections
from nlpmon.demo import SyntheticStream
from nlpmon.drift.items import ItemColumn
from nlpmon.events import decode_event
from nlpmon.monitor.reference import ReferenceSample
from nlpmon.monitor.signals import extract_columns


def test_freeze_startup_freezes_what_lives_once_per_process() -> None:
    frozen = freeze_startup()
    assert frozen > 1000  # the imported modules, at least
    kept = [object() for _ in range(10)]
    assert freeze_startup() == frozen  # not again: what the process builds later stays collectable
    assert kept


def test_long_collections_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    times = iter([1.0, 1.5, 2.0, 2.01])
    watch = watch_collections(logging.getLogger("gc-test"), over_s=0.1)
    try:
        watch.clock = lambda: next(times)
        with caplog.at_level(logging.INFO, logger="gc-test"):
            watch("start", {"generation": 2})
            watch("stop", {"generation": 2, "collected": 3, "uncollectable": 0})
            watch("start", {"generation": 0})
            watch("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
        assert watch.long_collections == 1 and watch.longest_s == pytest.approx(0.5)
        assert [r.getMessage() for r in caplog.records] == [
            "garbage collection of generation 2 took 0.500 s (3 objects unreachable): the loop and the HTTP "
            "threads waited meanwhile"]
        assert watch in gc.callbacks
    finally:
        watch.close()
    assert watch not in gc.callbacks


def _sample(events: int) -> ReferenceSample:
    sample = ReferenceSample(capacity=150, seed=3)
    stream = list(SyntheticStream(seed=5, dim=8).events(events))
    for i in range(0, events, 40):
        decoded = [decode_event(json.dumps(e)) for e in stream[i:i + 40]]
        cols, _ = extract_columns(decoded)
        sample.add(cols, len(decoded), [e.text for e in decoded])
    return sample


def test_reference_string_items_are_untracked_tuples_and_their_state_is_unchanged() -> None:
    sample = _sample(400)  # past the capacity: selections as well as concatenations
    strings = {k: c for k, c in sample.columns().items() if not isinstance(c.values, np.ndarray) and len(c)}
    assert "token_tag" in strings and "entity_label" in strings
    gc.collect()
    for name, column in strings.items():
        assert isinstance(column.values, tuple), name
        assert not gc.is_tracked(column.values), name  # the collector no longer walks its items
    # the state holds lists, as before; a restored sample keeps tuples and the same state
    state = sample.state()
    assert all(isinstance(state["columns"][k]["values"], list) for k in strings)
    again = ReferenceSample.from_state(state)
    assert isinstance(again.columns()["token_tag"].values, tuple)
    assert json.dumps(again.state(), default=repr) == json.dumps(state, default=repr)
    segments = [sample.segment_state(a, min(a + 60, sample.size)) for a in range(0, sample.size, 60)]
    joined = ReferenceSample.from_segments(sample.head_state(), segments)
    assert json.dumps(joined.state(), default=repr) == json.dumps(state, default=repr)


def test_item_columns_of_tuples_select_and_concatenate_as_lists_do() -> None:
    event = np.array([0, 0, 1, 2, 2, 2], np.int64)
    values = ["a", "b", "c", "d", "e", "f"]
    as_list, as_tuple = ItemColumn(event, values), ItemColumn(event, tuple(values))
    positions = np.array([2, 0], np.int64)
    picked_l, picked_t = as_list.select_events(positions, 3), as_tuple.select_events(positions, 3)
    assert picked_t.values == tuple(picked_l.values) == ("d", "e", "f", "a", "b")
    assert np.array_equal(picked_t.event, picked_l.event)
    joined_l = ItemColumn.concat([as_list, picked_l], [3, 2])
    joined_t = ItemColumn.concat([as_tuple, picked_t], [3, 2])
    assert joined_t.values == tuple(joined_l.values) and np.array_equal(joined_t.event, joined_l.event)
