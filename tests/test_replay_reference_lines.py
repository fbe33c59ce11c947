"""Reference files: the reasons for invalid lines name the line of the file, past the decoder's batches."""

from __future__ import annotations

import json
from pathlib import Path

from nlpmon.replay import load_references


def test_invalid_reference_lines_are_named_by_their_line_in_the_file(tmp_path: Path) -> None:
    good = json.dumps({"event_id": "x", "model": "m", "task": "token-classification", "text": "a b",
                       "entities": [], "tokens": [{"text": "a", "tag": "X"}]})
    lines = [good] * 12_000
    for bad in (3, 5_003, 11_999):  # 1-based lines, in the first, second and third batch of 5,000
        lines[bad - 1] = "{not json"
    path = tmp_path / "ref.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_references([path])
    assert loaded.invalid == 3 and len(loaded.events) == 12_000 - 3
    assert [r.split(":")[0] for r in loaded.reasons] == ["ref.jsonl line 3", "ref.jsonl line 5003",
                                                         "ref.jsonl line 11999"]
