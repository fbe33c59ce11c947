"""Cost of the nesting-depth limit on the hot path, against ``orjson.loads`` and the unprotected decoder.

The decoder first tries a typed decode that refuses unknown fields (its nesting is bounded by the
schema but for ``metadata``, counted on the decoded values); an event with unknown fields is decoded
permissively after counting its brackets, and the full byte scan (``exceeds_depth``) runs only when the
brackets that decoded fields do not account for could nest past the limit, or before an invalid event's
error is explained.
Prints a markdown table, µs per event, best of several interleaved rounds: the scan alone, ``orjson.loads``,
the decoder (one ``EventDecoder`` per batch of events, as ``MonitorSet.process_lines`` uses it), and the
decoder as it was before the limit (one permissive typed decode, no check), with
the ratios measured in the same run.

    .venv/bin/python benchmarks/decode_depth.py [--events 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import orjson  # the reference parser (dev extra)

from nlpmon.demo import SyntheticStream
from nlpmon.events import EventDecoder
from nlpmon.events.decode import _DECODER, _build
from nlpmon.events.depth import MAX_JSON_DEPTH, exceeds_depth


def events(n: int, *, b64: bool, tokens_factor: int = 1, unknown: bool = False) -> list[bytes]:
    out = []
    for e in SyntheticStream(seed=1, dim=384, base64_embeddings=b64).events(n):
        e["tokens"] = e["tokens"] * tokens_factor
        if unknown:
            e["schema_version"] = 2
        out.append(json.dumps(e).encode())
    return out


def unprotected(raw: bytes) -> object:
    """The decoder before the depth limit: one permissive typed decode (RecursionError on deep input)."""
    return _build(_DECODER.decode(raw))


def per_event_us(fn: Callable[[bytes], object], lines: Sequence[bytes]) -> float:
    t0 = time.perf_counter()
    for line in lines:
        fn(line)
    return (time.perf_counter() - t0) / len(lines) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    cases = {
        "384-dim base64, ~30 tokens": events(args.events, b64=True),
        "384-dim JSON list, ~30 tokens": events(args.events, b64=False),
        "384-dim base64, ~150 tokens": events(args.events, b64=True, tokens_factor=5),
        "384-dim base64, ~30 tokens, an unknown field": events(args.events, b64=True, unknown=True),
        "384-dim base64, ~150 tokens, an unknown field": events(args.events, b64=True, tokens_factor=5,
                                                              unknown=True),
    }
    steps: dict[str, Callable[[], Callable[[bytes], object]]] = {  # a fresh one per batch, as in the service
        "scan": lambda: exceeds_depth, "orjson": lambda: orjson.loads, "decode": lambda: EventDecoder().decode,
        "before": lambda: unprotected,
    }
    print(f"Nesting-depth limit ({MAX_JSON_DEPTH}) on the hot path, µs/event, best of {args.rounds} interleaved "
          "rounds\n")
    print("| events | bytes/event | byte scan alone | orjson.loads | scan / orjson.loads | decoder (one "
          "EventDecoder per batch) | decoder before the limit | decoder / before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lines in cases.items():
        best = dict.fromkeys(steps, float("inf"))
        for _ in range(args.rounds):
            for step, make in steps.items():
                best[step] = min(best[step], per_event_us(make(), lines))
        size = sum(map(len, lines)) / len(lines)
        print(f"| {name} | {size:,.0f} | {best['scan']:.2f} | {best['orjson']:.2f} | "
              f"{best['scan'] / best['orjson']:.2f} | {best['decode']:.2f} | {best['before']:.2f} | "
              f"{best['decode'] / best['before']:.2f} |")


if __name__ == "__main__":
    main()
