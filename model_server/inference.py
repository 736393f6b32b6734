"""Predictors: turn a list of JSON items into a list of outputs, one per item.

Built-in formats (TorchScript, ONNX, trusted torch modules) take items
`{"input": <nested list of numbers>}`; items are grouped by shape and each
group runs as one forward pass, so one malformed item gets an `ItemFailure`
at its index while the others are computed. A failure is its own type, never
an output with an "error" key, so a model's real output can have any keys.
A user handler (`module:Class`) takes any JSON and runs models that need code.
"""

from __future__ import annotations

import gc
import importlib
import logging
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from control_plane.core.formats import ONNX, PICKLE, SAFETENSORS, TORCH, TORCHSCRIPT, detect_format
from model_server.errors import ItemDecodeError, ModelLoadError
from nexus_common.memory import trim_c_heap

logger = logging.getLogger("nexus.model_server")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """The result for an item the model could not compute: the wire's `errors[index]`."""

    message: str


def error_output(message: str) -> ItemFailure:
    return ItemFailure(message)


class Predictor(ABC):
    """Runs one batch at a time; callers serialize access (one worker thread per device)."""

    device: str = "cpu"

    @abstractmethod
    def predict(self, items: Sequence[Any]) -> list[Any]:
        """An output (or an ItemFailure) for every item, in order."""

    def warmup(self) -> None:  # noqa: B027  # optional hook
        """Run one small batch so the first request does not pay for lazy initialisation."""

    def example_item(self) -> Any:
        """An item this model accepts (for docs and `nexus serve`'s curl line), if known."""
        return None

    def close(self) -> None:  # noqa: B027  # optional hook
        """Drop the model's weights; the predictor answers nothing after this."""


class TensorPredictor(Predictor):
    """Shared decoding and grouping for models that take one float tensor."""

    input_dtype: Any = np.float32
    item_shape: tuple[int, ...] | None = None  # known for ONNX models with static dims

    def predict(self, items: Sequence[Any]) -> list[Any]:
        outputs: list[Any] = [None] * len(items)
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for index, item in enumerate(items):
            try:
                array = self._decode(item)
            except ItemDecodeError as exc:
                outputs[index] = error_output(str(exc))
                continue
            groups.setdefault(array.shape, []).append((index, array))
        for shape, members in groups.items():
            batch = np.stack([array for _, array in members])
            try:
                rows = self.forward(batch)
            except Exception as exc:
                message = f"the model failed on input of shape {list(shape)}: {_summary(exc)}"
                for index, _ in members:
                    outputs[index] = error_output(message)
                continue
            for (index, _), row in zip(members, rows, strict=True):
                outputs[index] = row
        return outputs

    @abstractmethod
    def forward(self, batch: np.ndarray) -> list[Any]:
        """One forward pass over a stacked batch; one JSON-ready row per input."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One forward pass over a batch tensor: the named output arrays (the v2 protocol's
        path: no rows, no JSON, the arrays as the model made them)."""

    def warmup(self) -> None:
        if self.item_shape is not None:
            self.forward(np.zeros((1, *self.item_shape), dtype=self.input_dtype))

    @property
    def item_dims(self) -> tuple[int, ...] | None:
        """One item's shape, where the model says (ONNX) or a first Linear layer shows it."""
        return self.item_shape

    def example_item(self) -> Any:
        shape = self.item_shape
        return None if shape is None else {"input": np.zeros(shape).tolist()}

    def _decode(self, item: Any) -> np.ndarray:
        if not isinstance(item, dict) or "input" not in item:
            raise ItemDecodeError(
                'each item must be an object {"input": <nested list of numbers>}.'
            )
        try:
            array = np.asarray(item["input"], dtype=self.input_dtype)
        except (TypeError, ValueError):
            raise ItemDecodeError(
                "'input' must be a nested list of numbers with a regular shape."
            ) from None
        if self.item_shape is not None and array.shape != self.item_shape:
            raise ItemDecodeError(
                f"'input' has shape {list(array.shape)}; the model expects {list(self.item_shape)}."
            )
        return array


class TorchPredictor(TensorPredictor):
    """A TorchScript or (trusted) eager torch module."""

    def __init__(
        self,
        module: torch.nn.Module,
        device: str,
        dtype: str = "float32",
        warmup_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.device = device
        self._dtype = _DTYPES[dtype]
        self._module = module.to(device=device, dtype=self._dtype).eval()
        self.item_shape = None
        self._warmup_shape = warmup_shape

    def example_item(self) -> Any:
        shape = self._warmup_shape
        return None if shape is None else {"input": np.zeros(shape).tolist()}

    @property
    def item_dims(self) -> tuple[int, ...] | None:
        return self._warmup_shape

    def forward(self, batch: np.ndarray) -> list[Any]:
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self.device, self._dtype, non_blocking=True)
            return _rows(self._module(tensor))

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self.device, self._dtype, non_blocking=True)
            return _named_arrays(self._module(tensor))

    def warmup(self) -> None:
        if self._warmup_shape is not None:
            self.forward(np.zeros((1, *self._warmup_shape), dtype=np.float32))

    def close(self) -> None:
        del self._module


class OnnxPredictor(TensorPredictor):
    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device if providers[0].startswith("CUDA") else "cpu"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        first = self._session.get_inputs()[0]
        self._input_name = first.name
        self.input_dtype = np.int64 if "int64" in first.type else np.float32
        dims = first.shape[1:]
        self.item_shape = tuple(dims) if all(isinstance(d, int) for d in dims) else None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = [output.name for output in self._session.get_outputs()]
        results = self._session.run(None, {self._input_name: batch})
        return dict(zip(names, results, strict=True))

    def forward(self, batch: np.ndarray) -> list[Any]:
        results = self._session.run(None, {self._input_name: batch})
        if len(results) == 1:
            return [row.tolist() for row in results[0]]
        return [list(parts) for parts in zip(*(r.tolist() for r in results), strict=True)]

    def close(self) -> None:
        del self._session


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
                outputs[index] = error_output(f"cannot decode this item: {_summary(exc)}")
        if not inputs:
            return outputs
        try:
            results = list(self._handler.predict(inputs))
            if len(results) != len(inputs):
                raise ValueError(f"predict returned {len(results)} outputs for {len(inputs)}")
        except Exception as exc:
            logger.exception("handler predict failed")
            for index in indices:
                outputs[index] = error_output(f"the handler failed: {_summary(exc)}")
            return outputs
        postprocess = getattr(self._handler, "postprocess", None)
        for index, result in zip(indices, results, strict=True):
            try:
                outputs[index] = postprocess(result) if postprocess else result
            except Exception as exc:
                outputs[index] = error_output(f"cannot encode this output: {_summary(exc)}")
        return outputs

    def warmup(self) -> None:
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
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ModelLoadError(f"handler '{spec}' must look like 'package.module:ClassName'.")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import the handler '{spec}': {exc}.") from exc
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
) -> Predictor:
    """The predictor for a verified model file, refusing unsafe or code-less formats."""
    if handler:
        return HandlerPredictor(load_handler(handler), path, device)
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
        return TorchPredictor(module, device, dtype, warmup_shape or _guess_shape(module))
    if fmt == ONNX:
        if dtype != "float32":
            raise ModelLoadError("NEXUS_DTYPE applies to torch models; export the ONNX in fp16.")
        return OnnxPredictor(path, device)
    if fmt in (TORCH, PICKLE):
        module = _load_torch_module(path, device, trust_pickle)
        return TorchPredictor(module, device, dtype, warmup_shape or _guess_shape(module))
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


def _rows(output: Any) -> list[Any]:
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu().numpy().tolist()  # type: ignore[no-any-return]
    if isinstance(output, tuple | list):
        columns = [_rows(part) for part in output]
        return [list(parts) for parts in zip(*columns, strict=True)]
    if isinstance(output, dict):
        keys = list(output)
        columns = [_rows(output[key]) for key in keys]
        return [dict(zip(keys, parts, strict=True)) for parts in zip(*columns, strict=True)]
    raise TypeError(f"the model returned {type(output).__name__}, not tensors")


def _named_arrays(output: Any) -> dict[str, np.ndarray]:
    """A torch module's output as named arrays: `output`, `output0…` for a tuple, or a
    dict's own keys."""
    if isinstance(output, torch.Tensor):
        return {"output": output.detach().cpu().numpy()}
    if isinstance(output, tuple | list):
        return {f"output{i}": _named_arrays(part)["output"] for i, part in enumerate(output)}
    if isinstance(output, dict):
        return {str(key): _named_arrays(value)["output"] for key, value in output.items()}
    raise TypeError(f"the model returned {type(output).__name__}, not tensors")


def _summary(exc: BaseException) -> str:
    """One line: TorchScript puts the real cause on the last line of a long message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
