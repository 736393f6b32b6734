"""A transformers folder served for its task, with no user code and nothing from a hub.

Text in (BYTES), the task's answer out: text classification (`label`, `score` from the
config's `id2label`), token classification (`entities`: each text's tokens with their label,
score and character span, as JSON), feature extraction (`embedding`: the last hidden state
mean-pooled over the text's tokens), image classification (encoded image bytes in, `label`
and `score` out). The tokenizer (or image processor) runs once per batch, on the whole
batch, padded to its longest item; the forward pass runs on the configured device and
dtype. Offline mode is forced and `trust_remote_code` stays off unless
NEXUS_TRUST_REMOTE_CODE=1: a folder whose config maps classes to its own code is refused.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from control_plane.core.folders import (
    FEATURE_EXTRACTION,
    IMAGE_CLASSIFICATION,
    TEXT_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    task_signature,
)
from model_server.errors import ItemDecodeError, ModelLoadError
from model_server.tensors import TensorPredictor
from nexus_common.signature import Signature

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TransformersPredictor(TensorPredictor):
    def __init__(
        self, path: Path, task: str | None, device: str, dtype: str, trust_remote_code: bool
    ) -> None:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if config.get("auto_map") and not trust_remote_code:
            raise ModelLoadError(
                f"{path.name}'s config.json maps its classes to code in the folder "
                "(auto_map); loading it would run that code.",
                hint="set NEXUS_TRUST_REMOTE_CODE=1 if you trust it",
            )
        if task is None:
            raise ModelLoadError(
                f"no built-in task serves {config.get('architectures') or 'this folder'}.",
                hint="store it with --task, or serve it with NEXUS_HANDLER=module:Class",
            )
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[name] = "1"  # nothing is ever fetched at run time
        import transformers

        models = {
            TEXT_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
            TOKEN_CLASSIFICATION: transformers.AutoModelForTokenClassification,
            FEATURE_EXTRACTION: transformers.AutoModel,
            IMAGE_CLASSIFICATION: transformers.AutoModelForImageClassification,
        }
        options: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": trust_remote_code,
        }
        try:
            model = models[task].from_pretrained(str(path), dtype=_DTYPES[dtype], **options)
            if task == IMAGE_CLASSIFICATION:
                self._processor = transformers.AutoImageProcessor.from_pretrained(
                    str(path), **options
                )
            else:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **options)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{path.name} cannot be loaded for {task}: {exc}") from exc
        self.device = device
        self.task = task
        self._model = model.to(device).eval()
        self._labels = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        positions = int(getattr(model.config, "max_position_embeddings", None) or 512)
        tokenizer = getattr(self, "_tokenizer", None)
        self._max_length = (
            min(int(tokenizer.model_max_length), positions) if tokenizer else positions
        )
        self.signature = Signature.from_json(task_signature(task, config), path.name)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.task == IMAGE_CLASSIFICATION:
            return self._images(inputs["image"].reshape(-1))
        texts = [_text(value) for value in inputs["text"].reshape(-1)]
        encoded = self._tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self._max_length,
            return_tensors="pt",
            return_offsets_mapping=self.task == TOKEN_CLASSIFICATION,
        )
        offsets = encoded.pop("offset_mapping", None)
        batch = {name: tensor.to(self.device) for name, tensor in encoded.items()}
        with torch.inference_mode():
            output = self._model(**batch)
        if self.task == FEATURE_EXTRACTION:
            return {"embedding": _mean_pooled(output.last_hidden_state, batch["attention_mask"])}
        if self.task == TOKEN_CLASSIFICATION:
            assert offsets is not None
            return {"entities": self._entities(texts, output.logits, offsets)}
        return self._classified(output.logits)

    def _classified(self, logits: torch.Tensor) -> dict[str, np.ndarray]:
        scores, indices = torch.softmax(logits.float(), dim=-1).max(dim=-1)
        labels = np.empty(len(indices), dtype=object)
        labels[:] = [self._labels.get(int(i), str(int(i))).encode() for i in indices.tolist()]
        return {"label": labels, "score": scores.cpu().numpy().astype(np.float32)}

    def _entities(
        self, texts: list[str], logits: torch.Tensor, offsets: torch.Tensor
    ) -> np.ndarray:
        scores, indices = torch.softmax(logits.float(), dim=-1).max(dim=-1)
        answers = np.empty(len(texts), dtype=object)
        for row, text in enumerate(texts):  # per text, after the one forward pass
            found = []
            for (start, end), index, score in zip(
                offsets[row].tolist(), indices[row].tolist(), scores[row].tolist(), strict=True
            ):
                if start == end:  # a special or padding token
                    continue
                label = self._labels.get(int(index), str(index))
                found.append(
                    {
                        "word": text[start:end],
                        "label": label,
                        "score": round(score, 6),
                        "start": start,
                        "end": end,
                    }
                )
            answers[row] = json.dumps(found).encode()
        return answers

    def _images(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        try:
            images = [Image.open(io.BytesIO(bytes(data))).convert("RGB") for data in encoded]
        except (UnidentifiedImageError, OSError) as exc:
            raise ItemDecodeError(f"an image cannot be decoded: {exc}") from None
        pixels = self._processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            logits = self._model(pixel_values=pixels.to(self.device, self._model.dtype)).logits
        return self._classified(logits)

    def synthetic(self, rows: int) -> dict[str, np.ndarray] | None:
        """Warm-up inputs: short texts, or small blank images (empty bytes are no image)."""
        made = np.empty(rows, dtype=object)
        if self.task == IMAGE_CLASSIFICATION:
            from PIL import Image

            buffer = io.BytesIO()
            Image.new("RGB", (32, 32)).save(buffer, format="PNG")
            made[:] = [buffer.getvalue()] * rows
            return {"image": made}
        made[:] = [b"warm up"] * rows
        return {"text": made}

    def example_item(self) -> Any:
        if self.task == IMAGE_CLASSIFICATION:
            return None  # images travel as bytes: the v2 protocol's BYTES
        return {"text": "a sentence to classify"}

    def close(self) -> None:
        del self._model


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ItemDecodeError("a text is not UTF-8.") from None
    if isinstance(value, str):
        return value
    raise ItemDecodeError(f"'text' must be a string, not {type(value).__name__}.")


def _mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
    return pooled.float().cpu().numpy()
