"""Building the predictor for a verified model file, user handlers, and devices.

Built-in formats (TorchScript, ONNX, trusted torch modules) are `model_server.tensors`'
predictors; a user handler (`module:Class`) takes any JSON and runs models that need code.
"""

from __future__ import annotations

import gc
import logging
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from control_plane.core.folders import SAVEDMODEL, TRANSFORMERS
from control_plane.core.formats import ONNX, PICKLE, SAFETENSORS, TORCH, TORCHSCRIPT, detect_format
from model_server.errors import ModelLoadError
from model_server.predictor import Predictor, error_output, summary
from model_server.tensors import NamedHandlerPredictor, OnnxPredictor, TorchPredictor
from nexus_common.errors import HandlerSpecError
from nexus_common.handlers import import_class
from nexus_common.memory import trim_c_heap
from nexus_common.signature import Signature

logger = logging.getLogger("nexus.model_server")


class HandlerPredictor(Predictor):
    """A user class: `load(path, device)`, `predict(items)`, optional pre/postprocess."""

    def __init__(self, handler: Any, path: Path, device: str) -> None:
        self.device = device
        self._handler = handler
        handler.load(path, device)

    def predict(self, items: Sequence[Any]) -> list[Any]:
        outputs: list[Any] = [None] * len(items)
        indices: list[int] = []
        inputs: list[Any] = []
        preprocess = getattr(self._handler, "preprocess", None)
        for index, item in enumerate(items):
            try:
                inputs.append(preprocess(item) if preprocess else item)
                indices.append(index)
            except Exception as exc:
                outputs[index] = error_output(f"cannot decode this item: {summary(exc)}")
        if not inputs:
            return outputs
        try:
            results = list(self._handler.predict(inputs))
            if len(results) != len(inputs):
                raise ValueError(f"predict returned {len(results)} outputs for {len(inputs)}")
        except Exception as exc:
            logger.exception("handler predict failed")
            for index in indices:
                outputs[index] = error_output(f"the handler failed: {summary(exc)}")
            return outputs
        postprocess = getattr(self._handler, "postprocess", None)
        for index, result in zip(indices, results, strict=True):
            try:
                outputs[index] = postprocess(result) if postprocess else result
            except Exception as exc:
                outputs[index] = error_output(f"cannot encode this output: {summary(exc)}")
        return outputs

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        hook = getattr(self._handler, "warmup", None)
        if hook is not None:
            hook()

    def example_item(self) -> Any:
        return getattr(self._handler, "example", None)

    def close(self) -> None:
        hook = getattr(self._handler, "close", None)
        if hook is not None:
            hook()
        del self._handler


def free_device_memory(device: str) -> None:
    """Return a dropped model's memory: Python's cycles, CUDA's cache, glibc's free lists."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    trim_c_heap()


def resolve_device(requested: str | None) -> str:
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device '{requested}' was asked for, but torch sees no CUDA GPU.",
            hint="set NEXUS_DEVICE=cpu, or install a CUDA build of torch",
        )
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ModelLoadError(f"device '{requested}' is not cpu, cuda or cuda:N.")
    return requested


def load_handler(spec: str) -> Any:
    try:
        cls = import_class(spec)
    except HandlerSpecError as exc:
        raise ModelLoadError(exc.message) from exc
    instance = cls()
    for method in ("load", "predict"):
        if not callable(getattr(instance, method, None)):
            raise ModelLoadError(f"handler '{spec}' has no {method}() method.")
    return instance


def build_predictor(
    path: Path,
    *,
    fmt: str | None,
    device: str,
    dtype: str = "float32",
    handler: str | None = None,
    trust_pickle: bool = False,
    warmup_shape: tuple[int, ...] | None = None,
    signature: Signature | None = None,
    threads: int | None = None,
    task: str | None = None,
    trust_remote_code: bool = False,
) -> Predictor:
    """The predictor for a verified model file, refusing unsafe or code-less formats
    (`threads`: the CPU threads it may use, where the runtime takes a number)."""
    if handler:
        instance = load_handler(handler)
        if getattr(instance, "signature", None) is not None:
            return NamedHandlerPredictor(instance, path, device)
        return HandlerPredictor(instance, path, device)
    if path.is_dir() and fmt == TRANSFORMERS:
        from model_server.runtimes.hf_transformers import TransformersPredictor

        return TransformersPredictor(path, task, device, dtype, trust_remote_code)
    if path.is_dir() and fmt == SAVEDMODEL:
        from model_server.runtimes.tf_savedmodel import SavedModelPredictor

        return SavedModelPredictor(path, device, threads)
    if path.is_dir():
        raise ModelLoadError(
            f"{path.name} is a directory model; the server loads one through a handler.",
            hint="serve it with NEXUS_HANDLER=module:Class (its load() receives the directory)",
        )
    fmt = fmt or detect_format(path)
    if dtype != "float32" and not device.startswith("cuda"):
        raise ModelLoadError(f"NEXUS_DTYPE={dtype} needs a GPU; on the CPU use float32.")
    if fmt == TORCHSCRIPT:
        module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
        return TorchPredictor(
            module, device, dtype, warmup_shape or _guess_shape(module), signature
        )
    if fmt == ONNX:
        if dtype != "float32":
            raise ModelLoadError("NEXUS_DTYPE applies to torch models; export the ONNX in fp16.")
        return OnnxPredictor(path, device, threads)
    if fmt in (TORCH, PICKLE):
        module = _load_torch_module(path, device, trust_pickle)
        return TorchPredictor(
            module, device, dtype, warmup_shape or _guess_shape(module), signature
        )
    if fmt == SAFETENSORS:
        raise ModelLoadError(
            f"{path.name} holds safetensors weights without code.",
            hint="serve it with a handler: NEXUS_HANDLER=module:Class",
        )
    raise ModelLoadError(
        f"{path.name} is not a format the server knows (TorchScript, ONNX, torch).",
        hint="export TorchScript or ONNX, or serve it with NEXUS_HANDLER=module:Class",
    )


def _load_torch_module(path: Path, device: str, trust_pickle: bool) -> torch.nn.Module:
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as exc:
        if not trust_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickled torch module; loading it would run its code.",
                hint="export TorchScript or ONNX, or set NEXUS_TRUST_PICKLE=1 if you trust it",
            ) from exc
        loaded = torch.load(path, map_location=device, weights_only=False)
    if isinstance(loaded, torch.nn.Module):
        return loaded
    raise ModelLoadError(
        f"{path.name} holds a state dict (weights without code).",
        hint="serve it with a handler that builds the module: NEXUS_HANDLER=module:Class",
    )


def _guess_shape(module: torch.nn.Module) -> tuple[int, ...] | None:
    """For warm-up: the input width of a model whose first layer is Linear, else unknown."""
    for parameter in module.parameters():
        return (int(parameter.shape[1]),) if parameter.dim() == 2 else None
    return None


def warm_up(predictor: Predictor, sizes: Sequence[int], label: str) -> None:
    """Run the warm-up batches and record their time; ModelLoadError (the predictor closed)
    when one fails, so the version never serves."""
    started = time.perf_counter()
    try:
        predictor.warmup(sizes)
    except Exception as exc:
        predictor.close()
        raise ModelLoadError(f"{label} failed its warm-up: {summary(exc)}") from exc
    predictor.warmup_seconds = time.perf_counter() - started
