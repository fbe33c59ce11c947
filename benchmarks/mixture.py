"""Mixture streams for partial drift: held-out events of domain A, then each event from B with probability p.

    .venv/bin/python benchmarks/mixture.py --data ../shared/data --a quotes --b pydocs --p 0.05 --out mix.jsonl
    .venv/bin/python benchmarks/mixture.py ... --ramp 2000 --out ramp.jsonl   # p rises 0 -> 1 over 2,000 events

The data's own ``make_stream.py`` builds the pieces (a reference of A, a stream of A held out of it,
a stream of B); this module interleaves them with a seeded generator and stamps the events 10 ms apart,
so that event time is monotone. The truth (``<out>.truth.json``) gives the change point and, per event
after it, whether it came from B. Python stdlib + numpy; deterministic for the same arguments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

START = datetime(2026, 1, 1, tzinfo=UTC)


def make_stream(data: Path, out: Path, segments: str, seed: int, exclude: Path | None = None) -> Path:
    """``make_stream.py`` of the data directory (base64 embeddings); reused when ``out`` exists."""
    if not out.exists():
        cmd = [sys.executable, str(data / "make_stream.py"), "--out", str(out), "--segments", segments,
               "--seed", str(seed), "--embedding-format", "base64"]
        if exclude is not None:
            cmd += ["--exclude", str(exclude)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return out


def reference_seed(domain: str) -> int:
    """The seeds benchmarks/detection.py and tests/realdata use for the 3,000-event references."""
    return 11 if domain == "quotes" else 21


def b_probability(n: int, p: float | None, ramp: int | None) -> np.ndarray:
    """Per-event probability of B after the change point: constant ``p``, or linear 0 -> 1 over ``ramp``."""
    if ramp is not None:
        return np.minimum(np.arange(n, dtype=np.float64) / ramp, 1.0)
    assert p is not None
    return np.full(n, float(p))


def mix(a_lines: list[bytes], b_lines: list[bytes], before: int, after: int, prob: np.ndarray,
        seed: int) -> tuple[list[bytes], np.ndarray]:
    """``before`` events of A, then ``after`` events each from B with probability ``prob[i]`` (else the
    next A event). A and B are consumed in order. Returns the restamped lines and the B flags."""
    rng = np.random.default_rng(seed)
    from_b = rng.random(after) < prob[:after]
    need_a = before + int((~from_b).sum())
    if need_a > len(a_lines) or int(from_b.sum()) > len(b_lines):
        raise ValueError(f"need {need_a} A and {int(from_b.sum())} B events, have {len(a_lines)} and {len(b_lines)}")
    out: list[bytes] = []
    ia = ib = 0
    for i in range(before + after):
        if i >= before and from_b[i - before]:
            raw, ib = b_lines[ib], ib + 1
        else:
            raw, ia = a_lines[ia], ia + 1
        event = json.loads(raw)
        t = START + timedelta(milliseconds=10 * i)
        event["timestamp"] = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        out.append(json.dumps(event).encode())
    return out, from_b


def build_mixture(data: Path, root: Path, a: str, b: str, *, p: float | None = None, ramp: int | None = None,
                  before: int = 3000, after: int = 4000, seed: int = 31) -> tuple[Path, Path]:
    """(reference of A, mixture stream) under ``root``; every A event of the stream is held out of the
    reference. Files are reused when present."""
    ref = make_stream(data, root / f"ref-{a}.jsonl", f"{a}:3000", reference_seed(a))
    a_stream = make_stream(data, root / f"held-{a}.jsonl", f"{a}:{before + after}", 12, ref)
    b_stream = make_stream(data, root / f"pool-{b}.jsonl", f"{b}:{after}", 14)
    tag = f"ramp{ramp}" if ramp is not None else f"p{p:g}"
    out = root / f"mix-{a}-{b}-{tag}-{seed}.jsonl"
    if not out.exists():
        lines, from_b = mix(a_stream.read_bytes().splitlines(), b_stream.read_bytes().splitlines(), before, after,
                            b_probability(after, p, ramp), seed)
        out.write_bytes(b"\n".join(lines) + b"\n")
        truth = {"a": a, "b": b, "p": p, "ramp": ramp, "change_point": before, "events": before + after,
                 "from_b": np.flatnonzero(from_b).tolist()}
        out.with_name(out.name + ".truth.json").write_text(json.dumps(truth))
    return ref, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--p", type=float)
    ap.add_argument("--ramp", type=int, help="p rises linearly from 0 to 1 over this many events")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--out", type=Path, required=True, help="directory for the reference and the stream")
    args = ap.parse_args()
    if (args.p is None) == (args.ramp is None):
        print("give exactly one of --p and --ramp", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    ref, stream = build_mixture(args.data, args.out, args.a, args.b, p=args.p, ramp=args.ramp, seed=args.seed)
    print(f"reference {ref}\nstream {stream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
