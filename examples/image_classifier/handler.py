"""Example handler: an image classifier that takes {"image": "<base64 PNG or JPEG>"}.

The stored model is a TorchScript classifier over 1x28x28 grayscale images.
Serve it with:

    NEXUS_HANDLER=examples.image_classifier.handler:ImageClassifier nexus-model-server

Each output is {"label": <class index>, "scores": [<softmax per class>]}.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

SIZE = 28


class ImageClassifier:
    def load(self, path: Path, device: str) -> None:
        self.device = device
        self.model = torch.jit.load(str(path), map_location=device).eval()

    def preprocess(self, item: Any) -> torch.Tensor:
        """Decode one item; a bad one raises and gets an error at its index only."""
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ValueError('expected {"image": "<base64 PNG or JPEG>"}')
        try:
            raw = base64.b64decode(item["image"], validate=True)
            image = Image.open(io.BytesIO(raw)).convert("L").resize((SIZE, SIZE))
        except (binascii.Error, UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"'image' is not a base64 PNG or JPEG ({exc})") from None
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).unsqueeze(0)

    def predict(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode():
            batch = torch.stack(list(inputs)).to(self.device)
            return list(torch.softmax(self.model(batch), dim=1).cpu())

    def postprocess(self, scores: torch.Tensor) -> dict[str, Any]:
        return {"label": int(scores.argmax()), "scores": scores.tolist()}

    def warmup(self) -> None:
        self.predict([torch.zeros(1, SIZE, SIZE)])
