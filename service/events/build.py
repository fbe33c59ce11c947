"""What every event builder shares: the base event, vectors from any array or tensor, checked scores.

Pure: numpy only. spaCy, transformers, torch and Spark NLP are never imported; their objects are read
through the attributes they document (``tensor.detach()``, ``tensor.numpy()``...).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

#: Scores this far outside [0, 1] are float rounding (a float32 softmax can give 1.0000001) and are clipped.
SCORE_SLACK: Final = 1e-6
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
SUBWORD_MARKS: Final = ("##", "\u0120", "\u2581")  # WordPiece continuation, byte-level BPE and SentencePiece spaces
Timestamp = float | datetime | None


class BuilderError(ValueError):
    """A library output the builders cannot turn into a valid event; the message says what to pass."""


def as_vector(value: Any, what: str = "embedding") -> np.ndarray:
    """A 1-D finite float32 copy of a numpy array, a list of numbers or a tensor (torch, TF, JAX...).

    Tensors are detached and moved to the CPU first; any float dtype is accepted (bfloat16 is widened
    through float32). Raises BuilderError for anything but one vector: a (1, H) batch, (T, H) token
    vectors or (1, T, H) hidden states name the pooling or indexing step to add.
    """
    arr = to_numpy(value)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise BuilderError(f"{what} has dtype {arr.dtype}: pass real numbers (a float vector)")
    if arr.ndim != 1:
        raise BuilderError(shape_hint(what, tuple(arr.shape)))
    if arr.size == 0:
        raise BuilderError(f"{what} is empty: pass a vector with at least one value")
    wide = arr.astype(np.float64)
    if not np.isfinite(wide).all():
        raise BuilderError(f"{what} contains NaN or infinity: check the model output before publishing")
    if np.abs(wide).max() > FLOAT32_MAX:
        raise BuilderError(f"{what} has values beyond the float32 range (|x| > {FLOAT32_MAX:.3g})")
    return np.ascontiguousarray(arr, dtype="<f4")


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list | tuple):
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise BuilderError("embedding list is not a flat list of numbers: pass one vector, e.g. "
                               "[0.1, -0.2, ...]") from None
    tensor = value
    if hasattr(tensor, "detach"):  # torch: drop the autograd graph, leave the GPU, widen bfloat16
        tensor = tensor.detach()
        if hasattr(tensor, "cpu"):
            tensor = tensor.cpu()
        if "bfloat16" in str(getattr(tensor, "dtype", "")) and hasattr(tensor, "float"):
            tensor = tensor.float()
    if hasattr(tensor, "numpy"):  # torch and TensorFlow tensors
        return np.asarray(tensor.numpy())
    try:
        return np.asarray(tensor)  # JAX, CuPy on host, anything with __array__
    except Exception as exc:
        raise BuilderError(f"cannot read {type(value).__name__} as a vector ({exc}): pass a numpy array, "
                           "a list of numbers or a tensor") from None


def shape_hint(what: str, shape: tuple[int, ...]) -> str:
    if len(shape) == 0:
        return f"{what} is a scalar: pass a vector of numbers"
    if len(shape) == 3:
        return (f"{what} has shape {shape} (batch, tokens, hidden): these are per-token hidden states "
                "(last_hidden_state); pool them into one vector per text first, e.g. the mean over tokens "
                "weighted by the attention mask, (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), then "
                "pass row [i] of the result")
    if len(shape) == 2 and shape[0] == 1:
        return (f"{what} has shape {shape}: one vector per event is expected; pass vector[0] (drop the "
                "batch axis), or use the batch builder with one row per text")
    if len(shape) == 2:
        return (f"{what} has shape {shape}: one vector per event is expected, not one per token or per "
                "text; pool token vectors (e.g. mean over axis 0) or pass row [i] for text i")
    return f"{what} has shape {shape}: pass one 1-D vector per event"


def encode_embedding(vector: Any) -> dict[str, str]:
    """``{"dtype": "float32", "base64": ...}`` for one vector (little-endian float32; see ``as_vector``)."""
    arr = as_vector(vector)
    return {"dtype": "float32", "base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def checked_score(value: Any, where: str) -> float:
    """``value`` as a float in [0, 1]; raises BuilderError for logits, NaN or non-numbers."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise BuilderError(f"{where}: score {value!r} is not a number") from None
    if not math.isfinite(score) or score < -SCORE_SLACK or score > 1.0 + SCORE_SLACK:
        raise BuilderError(
            f"{where}: score {score:.6g} is outside [0, 1]; these look like raw logits "
            "(function_to_apply='none'?): build the pipeline with function_to_apply='softmax' or 'sigmoid', "
            "or pass probabilities")
    return min(max(score, 0.0), 1.0)


def base_event(model: str, model_version: str, event_id: str | None, timestamp: Timestamp,
               text: str | None, embedding: Any, split: str,
               task: str = "token-classification") -> dict[str, Any]:
    """The fields every builder sets: ids, time (now when not given), task, split, text, embedding."""
    ts = timestamp if timestamp is not None else datetime.now(UTC)
    event: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()), "model": model, "model_version": model_version,
        "timestamp": ts.isoformat().replace("+00:00", "Z") if isinstance(ts, datetime) else float(ts),
        "task": task, "split": split,
    }
    if text is not None:
        event["text"] = text
    if embedding is not None:
        event["embedding"] = encode_embedding(embedding)
    return event


def strip_marks(word: str) -> str:
    for mark in SUBWORD_MARKS:
        if word.startswith(mark):
            return word[len(mark):]
    return word


def find(text: str, word: str, cursor: int) -> tuple[int, int] | None:
    """``(start, end)`` of the first occurrence of ``word`` in ``text`` at or after ``cursor``, ignoring case
    (an uncased tokenizer's ``word`` is lower-cased) and the spaces between its pieces (a slow tokenizer joins
    ``memory`` and ``.`` as ``"memory ."`` where the text says ``memory.``); None when absent."""
    pieces = word.split()
    if not pieces:
        return None
    m = re.compile(r"\s*".join(map(re.escape, pieces)), re.IGNORECASE).search(text, cursor)
    return (m.start(), m.end()) if m else None


def is_batch(outputs: Any) -> bool:
    return isinstance(outputs, list | tuple) and len(outputs) > 0 and all(isinstance(o, list | tuple)
                                                                          for o in outputs)
