"""Real model folders made here, never downloaded: a tiny BERT (random weights from a small
config, a WordPiece tokenizer from a small vocabulary) saved with `save_pretrained`, and a
TensorFlow SavedModel of two named inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "great",
    "good",
    "bad",
    "terrible",
    "awful",
    "fine",
    "plot",
    "acting",
    "loved",
    "hated",
    "it",
    "this",
    "that",
    "very",
    "not",
    "really",
    "quite",
    "story",
    "music",
    "ending",
]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
SENTENCES = [
    "the movie was great",
    "this film is really bad",
    "awful acting",
    "the plot was fine but the ending was terrible",
    "loved it",
    "not quite good",
]


def make_tiny_bert(folder: Path, head: str = "classification", **sizes: int) -> Any:
    """A BERT for sequence classification (`head="classification"`), token classification
    (`"tokens"`) or the bare encoder (`"features"`), with its tokenizer, saved into `folder`;
    the model and the tokenizer, for comparisons."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
        BertTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder.parent / f"{folder.name}-vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    config = BertConfig(  # type: ignore[call-arg]  # num_labels is PretrainedConfig's
        vocab_size=len(WORDS) + 5,
        hidden_size=sizes.get("hidden_size", 32),
        num_hidden_layers=sizes.get("layers", 2),
        num_attention_heads=sizes.get("heads", 2),
        intermediate_size=sizes.get("intermediate_size", 64),
        max_position_embeddings=sizes.get("positions", 64),
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )
    torch.manual_seed(0)
    kinds = {"classification": BertForSequenceClassification, "tokens": BertForTokenClassification}
    model = kinds.get(head, BertModel)(config)
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model, tokenizer


def classify(model: Any, tokenizer: Any, texts: list[str]) -> list[tuple[str, float]]:
    """What the served model must answer: each text's label and score, computed here."""
    import torch

    with torch.inference_mode():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    scores, indices = torch.softmax(logits, dim=-1).max(dim=-1)
    return [(LABELS[int(i)], float(s)) for i, s in zip(indices, scores, strict=True)]


def embed(model: Any, tokenizer: Any, texts: list[str]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(dim=1) / mask.sum(dim=1)).numpy()


def make_tiny_vit(folder: Path) -> Any:
    """A ViT for image classification (32x32 images, labels cat and dog) with its image
    processor, saved into `folder`; the model and the processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(  # type: ignore[call-arg]  # num_labels is PretrainedConfig's
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return model, processor


def make_two_input_savedmodel(folder: Path) -> None:
    """A SavedModel whose `serving_default` takes `a` [-1, 3] FP32 and `b` [-1, 3] FP32 and
    answers `sum` (a + 2b) and `product` (a * b)."""
    import tensorflow as tf

    class TwoInputs(tf.Module):  # type: ignore[misc]
        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="a"),
                tf.TensorSpec([None, 3], tf.float32, name="b"),
            ]
        )
        def serve(self, a: Any, b: Any) -> dict[str, Any]:
            return {"sum": a + 2 * b, "product": a * b}

    module = TwoInputs()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
