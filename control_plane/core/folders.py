"""Model folders the registry recognises: a Hugging Face transformers folder, a TensorFlow
SavedModel, or any other directory (served through a handler).

A transformers folder (`config.json` naming a `model_type` or `architectures`, weights,
and a tokenizer or an image processor) is recorded with its architecture, its task and a
signature, so the model server serves it without code. What a folder lacks is said at
store time, with the file named, before a byte is uploaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.core.errors import UsageError

DIRECTORY = "directory"  # any folder: a handler's load() receives it
TRANSFORMERS = "transformers"
SAVEDMODEL = "savedmodel"
TREE_FORMATS = frozenset({DIRECTORY, TRANSFORMERS, SAVEDMODEL})

TEXT_CLASSIFICATION = "text-classification"
TOKEN_CLASSIFICATION = "token-classification"
FEATURE_EXTRACTION = "feature-extraction"
IMAGE_CLASSIFICATION = "image-classification"
TASKS = (TEXT_CLASSIFICATION, TOKEN_CLASSIFICATION, FEATURE_EXTRACTION, IMAGE_CLASSIFICATION)

# An architecture's class name ends in what its head does.
_HEADS = (
    ("ForSequenceClassification", TEXT_CLASSIFICATION),
    ("ForTokenClassification", TOKEN_CLASSIFICATION),
    ("ForImageClassification", IMAGE_CLASSIFICATION),
    ("Model", FEATURE_EXTRACTION),  # the bare encoder: BertModel, RobertaModel, ...
)
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
IMAGE_PROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class FolderModel:
    """What a stored folder is, as recorded in its entry."""

    format: str
    architecture: str | None = None
    task: str | None = None
    signature: dict[str, Any] | None = None  # the task's inputs and outputs, as JSON
    remote_code: bool = False  # config.json's auto_map: its classes are code in the folder


def detect_folder(path: Path, task: str | None = None) -> FolderModel:
    """The folder's kind; for a transformers folder, its architecture, task and signature
    (`task` overrides the one config.json implies). UsageError for a folder that claims a
    format but lacks a file it needs."""
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return FolderModel(SAVEDMODEL)
    config = _read_config(path)
    if config is None:
        if task is not None:
            raise UsageError(f"--task applies to a transformers folder; {path} has no config.json.")
        return FolderModel(DIRECTORY)
    return _transformers(path, config, task)


def task_signature(task: str, config: dict[str, Any]) -> dict[str, Any]:
    """The inputs and outputs a built-in task serves: text (or encoded image) bytes in,
    the task's natural answer out."""
    source = "image" if task == IMAGE_CLASSIFICATION else "text"
    inputs = [{"name": source, "datatype": "BYTES", "shape": [-1]}]
    if task in (TEXT_CLASSIFICATION, IMAGE_CLASSIFICATION):
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
        ]
    elif task == TOKEN_CLASSIFICATION:  # each text's entities, as a JSON list
        outputs = [{"name": "entities", "datatype": "BYTES", "shape": [-1]}]
    else:
        width = int(config.get("hidden_size") or config.get("dim") or config.get("d_model") or -1)
        outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, width]}]
    return {"inputs": inputs, "outputs": outputs}


def _read_config(path: Path) -> dict[str, Any] | None:
    file = path / "config.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and ("model_type" in data or "architectures" in data):
        return data
    return None


def _transformers(path: Path, config: dict[str, Any], task: str | None) -> FolderModel:
    architectures = config.get("architectures") or []
    architecture = str(architectures[0]) if architectures else None
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task}: the built-in tasks are {', '.join(TASKS)}.")
    task = task or _task_of(architecture)
    _check_weights(path)
    if task == IMAGE_CLASSIFICATION:
        if not (path / IMAGE_PROCESSOR).is_file():
            raise UsageError(
                f"{path} is an image model without {IMAGE_PROCESSOR}: the server cannot "
                "prepare images for it.",
                hint="save the image processor into the folder (processor.save_pretrained)",
            )
    elif task is not None and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(
            f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}): the server cannot "
            "read text for it.",
            hint="save the tokenizer into the folder (tokenizer.save_pretrained)",
        )
    signature = task_signature(task, config) if task is not None else None
    remote_code = bool(config.get("auto_map"))
    return FolderModel(TRANSFORMERS, architecture, task, signature, remote_code)


def _task_of(architecture: str | None) -> str | None:
    for suffix, task in _HEADS:
        if architecture and architecture.endswith(suffix):
            bare = suffix != "Model" or not ("For" in architecture or "Head" in architecture)
            return task if bare else None
    return None


def _check_weights(path: Path) -> None:
    """The folder's weights are there: a single file, or every shard its index names."""
    for index_name in SHARD_INDEXES:
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            except (OSError, ValueError, AttributeError):
                raise UsageError(
                    f"{index} is not a shard index (JSON with a weight_map)."
                ) from None
            for shard in sorted(set(weight_map.values())):
                if not (path / shard).is_file():
                    raise UsageError(
                        f"{path} is missing {shard}, a weight file {index_name} names."
                    )
            return
    if not any((path / name).is_file() for name in WEIGHTS):
        raise UsageError(
            f"{path} has no weights: {' or '.join(WEIGHTS)} is missing.",
            hint="save the model into the folder (model.save_pretrained)",
        )
