"""Tests with the real client libraries: spaCy with the real ``en_core_web_sm`` pipeline, transformers
pipelines around tiny BERT models built here from a config and a vocabulary trained on a frozen copy of the
repository's docs (no weights are downloaded: ``HF_HUB_OFFLINE=1``), and faust-streaming.

``make test`` installs them (the ``clients`` and ``faust`` extras). Without them these tests skip with the
reason; with ``CI`` set, a missing library is a failure.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or skip (fail when CI is set) saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}); pip install -e '.[{extra}]' (make test does)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)


TOKEN_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
CLASSES = ("NEGATIVE", "NEUTRAL", "POSITIVE")


#: A frozen copy of the README and docs: a vocabulary trained on the live docs changed with every doc edit, and
#: with it the random models' predictions (a test passed or failed with the docs' wording).
CORPUS = Path(__file__).resolve().parent / "data" / "vocab_corpus.md"


class TinyModels:
    """A WordPiece vocabulary trained on a frozen copy of the repository's docs, and randomly initialised tiny BERT
    models (seeded) with fast and slow tokenizers over it."""

    def __init__(self, folder: Path) -> None:
        require("torch", "clients")
        tokenizers = require("tokenizers", "clients")
        transformers = require("transformers", "clients")
        import torch
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        files = [str(CORPUS)]
        tk = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
        tk.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
        tk.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
        tk.decoder = tokenizers.decoders.WordPiece()
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tk.train(files, tokenizers.trainers.WordPieceTrainer(vocab_size=1500, special_tokens=special,
                                                              show_progress=False))
        cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
        tk.post_processor = tokenizers.processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        vocab = folder / "vocab.txt"
        vocab.write_text("\n".join(t for t, _ in sorted(tk.get_vocab().items(), key=lambda kv: kv[1])) + "\n")
        names = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                 "mask_token": "[MASK]"}
        self.fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, **names)
        self.slow = BertTokenizerLegacy(str(vocab))
        assert self.fast.is_fast and not self.slow.is_fast
        self.vocab_size = tk.get_vocab_size()

        def config(labels: tuple[str, ...]) -> Any:
            return transformers.BertConfig(
                vocab_size=self.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=256, id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)})

        torch.manual_seed(0)
        self.ner_model = transformers.BertForTokenClassification(config(TOKEN_LABELS)).eval()
        torch.manual_seed(1)
        self.clf_model = transformers.BertForSequenceClassification(config(CLASSES)).eval()
        torch.manual_seed(2)
        self.encoder = transformers.BertModel(config(CLASSES)).eval()
        self.pipeline = transformers.pipeline

    def ner(self, slow: bool = False, **kwargs: Any) -> Any:
        return self.pipeline("token-classification", model=self.ner_model,
                             tokenizer=self.slow if slow else self.fast, **kwargs)

    def clf(self, **kwargs: Any) -> Any:
        return self.pipeline("text-classification", model=self.clf_model, tokenizer=self.fast, **kwargs)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-bert"))
