"""Build valid prediction events from what NLP libraries return, without importing those libraries.

    from .builders import event_from_hf_token_classification, events_from_spacy

    ner = transformers.pipeline("token-classification", model=..., aggregation_strategy="simple")
    event = event_from_hf_token_classification(text, ner(text), model="ner-en", model_version="3",
                                               embedding=sentence_embedding)   # a dict, ready for json.dumps
    events = events_from_spacy(nlp, texts, model="ner-sm", model_version="3.8", beam_width=16)

docs/clients.md says what each library returns and what becomes of it. Every builder returns a dict that
the decoder accepts, or raises ``BuilderError`` (a ``ValueError``) with one line that says what was wrong
and what to pass instead; none clamps or drops a value silently. Scores must lie in [0, 1] (up to
``SCORE_SLACK`` of float rounding, which is clipped): raw logits are refused by every builder.
Embeddings are encoded as base64 float32 (the decoder's fast path). ``event_id`` defaults to a random
UUID4; pass your own to join ground truth later.

- Hugging Face pipelines: :mod:`nlpmon.events.hf`;
- spaCy docs, beam confidences and entity vectors: :mod:`nlpmon.events.spacy_doc`;
- token and tag lists (Spark NLP, CoNLL): :mod:`nlpmon.events.iob` (tag rules: :mod:`nlpmon.events.tags`);
- the shared pieces (vectors from arrays and tensors, scores): :mod:`nlpmon.events.build`.
"""

from .build import SCORE_SLACK, BuilderError, as_vector, base_event, checked_score, encode_embedding
from .hf import event_from_hf_token_classification, event_from_text_classification, events_from_hf_batch
from .iob import event_from_iob_tags
from .spacy_doc import event_from_spacy_doc, events_from_spacy, spacy_beam_scores
from .tags import TagSpan, spans_from_tags, split_tag

__all__ = [
    "SCORE_SLACK",
    "BuilderError",
    "TagSpan",
    "as_vector",
    "base_event",
    "checked_score",
    "encode_embedding",
    "event_from_hf_token_classification",
    "event_from_iob_tags",
    "event_from_spacy_doc",
    "event_from_text_classification",
    "events_from_hf_batch",
    "events_from_spacy",
    "spacy_beam_scores",
    "spans_from_tags",
    "split_tag",
]
