"""Events from spaCy: ``Doc`` objects, entity confidences from the pipeline's own beam, entity vectors.

spaCy is never imported here; the functions read ``doc.ents``, ``doc.vector``, ``ent.vector`` and call
the pipeline's NER component (``beam_parse``, ``scored_ents``) only when confidences are asked for.

What ``doc.vector`` is: without static word vectors (``en_core_web_sm`` has none: ``nlp.vocab.vectors``
is empty) spaCy still reports ``doc.has_vector`` and ``doc.vector`` is the mean of ``doc.tensor``, the
context-sensitive tok2vec output (96 dimensions in ``en_core_web_sm``) shared by the tagger and the parser,
not a trained sentence embedding. It moves with the text, so it is usable for drift; pass ``embedding=``
to send a sentence-transformer or other embedding of your own instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .build import BuilderError, Timestamp, as_vector, base_event, encode_embedding

#: ``(start_char, end_char, label) -> confidence``: the form ``entity_scores`` takes.
EntityScores = Mapping[tuple[int, int, str], float]


def event_from_spacy_doc(
    doc: Any, *, model: str, model_version: str = "unversioned", event_id: str | None = None,
    timestamp: Timestamp = None, split: str = "production", embedding: Any = None,
    include_vector: bool = True, entity_scores: EntityScores | None = None, entity_vectors: bool = False,
    tag_attribute: str = "pos_",
) -> dict[str, Any]:
    """An event from a spaCy ``Doc``: ``doc.ents`` (character offsets), the tokens with ``token.pos_``
    (or ``tag_attribute``, e.g. ``"tag_"`` or ``"ent_iob_"``) and their character offsets (``token.idx``,
    ``token.idx + len(token)``), and an embedding.

    The embedding is ``embedding`` when given, else ``doc.vector`` when ``include_vector`` and the doc has
    one (see the module docstring for what it is without static vectors). ``entity_scores`` (keyed by
    ``(start_char, end_char, label)``, e.g. from ``spacy_beam_scores``) become the entity scores; an entity
    missing from it has no score. ``entity_vectors`` adds ``ent.vector`` to each entity (the
    ``entity_embedding`` signal). Raises BuilderError for scores outside [0, 1] or a bad vector.
    """
    vector = embedding
    if vector is None and include_vector and getattr(doc, "has_vector", False):
        vector = doc.vector
    event = base_event(model, model_version, event_id, timestamp, doc.text, vector, split)
    scores = entity_scores or {}
    entities = []
    for ent in doc.ents:
        e: dict[str, Any] = {"label": ent.label_, "start": ent.start_char, "end": ent.end_char, "text": ent.text}
        score = scores.get((ent.start_char, ent.end_char, ent.label_))
        if score is not None:
            if not 0.0 <= float(score) <= 1.0:
                raise BuilderError(f"entity_scores[{ent.start_char, ent.end_char, ent.label_}] = {score} is "
                                   "outside [0, 1]: pass probabilities")
            e["score"] = float(score)
        if entity_vectors:
            e["embedding"] = encode_embedding(as_vector(ent.vector, f"vector of entity {ent.text!r}"))
        entities.append(e)
    event["entities"] = entities
    event["tokens"] = [{"text": t.text, "tag": getattr(t, tag_attribute), "start": t.idx, "end": t.idx + len(t)}
                       for t in doc if getattr(t, tag_attribute)]
    return event


def spacy_beam_scores(nlp: Any, docs: Sequence[Any], *, beam_width: int = 16, beam_density: float = 1e-4,
                      component: str = "ner") -> list[dict[tuple[int, int, str], float]]:
    """Confidence of every entity span the NER beam considers, per doc: ``{(start_char, end_char, label):
    p}``, where p is the probability mass (renormalised over the beam's parses) of the parses that contain
    that exact span with that label. An entity of ``doc.ents`` that no beam parse contains gets 0.

    The beam runs on copies of ``docs`` with their entities unset: spaCy's NER keeps entities already
    set on a doc, so a beam over ``nlp(text)`` would only ever score the greedy parse (every p = 1).
    Costs about one more NER pass per doc, times the beam width (docs/clients.md has the measured cost).
    Raises BuilderError when the pipeline has no such component or it cannot beam-parse.
    """
    if beam_width < 1:
        raise BuilderError(f"beam_width must be >= 1, got {beam_width}")
    try:
        ner = nlp.get_pipe(component)
    except KeyError:
        raise BuilderError(f"the pipeline has no {component!r} component (it has {list(nlp.pipe_names)}): "
                           "pass component= the name of its entity recognizer") from None
    if not (hasattr(ner, "beam_parse") and hasattr(ner, "scored_ents")):
        raise BuilderError(f"component {component!r} ({type(ner).__name__}) cannot beam-parse: confidences "
                           "need spaCy's transition-based EntityRecognizer")
    blank = []
    for doc in docs:
        copy = doc.copy()
        copy.set_ents([], default="missing")
        blank.append(copy)
    out: list[dict[tuple[int, int, str], float]] = []
    if not blank:
        return out
    beams = ner.beam_parse(blank, beam_width=beam_width, beam_density=beam_density)
    for doc, token_scores in zip(docs, ner.scored_ents(beams), strict=True):
        chars: dict[tuple[int, int, str], float] = {}
        for (start, end, label), p in token_scores.items():
            if end <= start:
                continue
            key = (doc[start].idx, doc[end - 1].idx + len(doc[end - 1]), str(label))
            chars[key] = min(max(float(p), 0.0), 1.0)  # float sums of probabilities can pass 1 by an ulp
        for ent in doc.ents:
            chars.setdefault((ent.start_char, ent.end_char, ent.label_), 0.0)
        out.append(chars)
    return out


def events_from_spacy(
    nlp: Any, texts: Iterable[str], *, model: str, model_version: str = "unversioned",
    beam_width: int | None = None, beam_density: float = 1e-4, batch_size: int = 64,
    event_ids: Sequence[str] | None = None, embeddings: Sequence[Any] | None = None,
    timestamp: Timestamp = None, split: str = "production", include_vector: bool = True,
    entity_vectors: bool = False, tag_attribute: str = "pos_", component: str = "ner",
) -> list[dict[str, Any]]:
    """Run ``nlp`` over ``texts`` (``nlp.pipe`` in batches) and build one event per text.

    With ``beam_width`` every entity gets a confidence from ``spacy_beam_scores`` (the ``confidence``
    signal then works for spaCy models; without it spaCy gives none). Other options as in
    ``event_from_spacy_doc``; ``embeddings[i]`` (optional) replaces ``doc.vector`` of text i.
    """
    texts = list(texts)
    for name, given in (("event_ids", event_ids), ("embeddings", embeddings)):
        if given is not None and len(given) != len(texts):
            raise BuilderError(f"{len(given)} {name} for {len(texts)} texts: give one per text")
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    scores: list[dict[tuple[int, int, str], float] | None] = [None] * len(docs)
    if beam_width is not None:
        scores = []
        for i in range(0, len(docs), batch_size):
            scores.extend(spacy_beam_scores(nlp, docs[i:i + batch_size], beam_width=beam_width,
                                            beam_density=beam_density, component=component))
    return [event_from_spacy_doc(doc, model=model, model_version=model_version, split=split,
                                 event_id=event_ids[i] if event_ids is not None else None, timestamp=timestamp,
                                 embedding=embeddings[i] if embeddings is not None else None,
                                 include_vector=include_vector, entity_scores=scores[i],
                                 entity_vectors=entity_vectors, tag_attribute=tag_attribute)
            for i, doc in enumerate(docs)]
