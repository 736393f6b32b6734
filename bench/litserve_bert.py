"""The reference peer of bench/real_models.py: the same transformers folder behind LitServe,
batching up to 32 requests or 50 ms, as its documentation writes a text classifier.

    python bench/litserve_bert.py FOLDER PORT
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation at run
# time to decide how the request body is parsed.

import sys
from typing import Any

import litserve as ls


class TextClassifier(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, folder: str) -> None:
        super().__init__(max_batch_size=32, batch_timeout=0.05)
        self.folder = folder

    def setup(self, device: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            self.folder, local_files_only=True
        )
        self.model = model.to(device).eval()
        self.labels = model.config.id2label

    def decode_request(self, request: dict[str, Any]) -> str:
        return str(request["text"])

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        encoded = self.tokenizer(texts, padding="longest", truncation=True, return_tensors="pt")
        with self.torch.inference_mode():
            logits = self.model(**encoded).logits
        scores, indices = self.torch.softmax(logits, dim=-1).max(dim=-1)
        return [
            {"label": self.labels[int(i)], "score": float(s)}
            for i, s in zip(indices, scores, strict=True)
        ]

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


if __name__ == "__main__":
    folder, port = sys.argv[1], int(sys.argv[2])
    server = ls.LitServer(TextClassifier(folder), accelerator="cpu", workers_per_device=1)
    server.run(port=port, host="127.0.0.1", generate_client_file=False)
