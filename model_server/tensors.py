"""The built-in predictors: TorchScript (and trusted torch) modules and ONNX graphs, any
number of named inputs and outputs, described by the model's signature.

An ONNX graph says its own signature. A torch module's comes from the version's record
(`nexus store --example-input` or `--signature`); without one it is taken as one float
input named `input` and its outputs are learned at warm-up, when its first layer shows
the input's width. Items for `/predict`: `{"input": <nested list>}` for a one-input model,
`{"<name>": <nested list>, ...}` with every input for others; answers are the output's row
(one output) or `{"<output>": row, ...}`. Items are grouped by their inputs' shapes and
each group runs as one forward pass, so a malformed item fails alone.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from control_plane.core.invoke import TorchCall, datatype_of, numpy_dtype, ort_tensors
from model_server.errors import ItemDecodeError, WorkerFailedError
from model_server.predictor import Predictor, error_output, summary
from nexus_common.signature import Signature, TensorSpec

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INPUT_NAME = "input"  # a one-input model's input, when nothing names it


class TensorPredictor(Predictor):
    """Decoding, grouping and naming shared by the models that take tensors."""

    signature: Signature | None = None  # the tensors served; None until known

    @abstractmethod
    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One forward pass over a batch of every input: the named output arrays."""

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        if self.signature is not None:
            return self.signature.inputs
        return (TensorSpec(INPUT_NAME, "FP32", (-1, *(self.item_dims or ()))),)

    @property
    def item_dims(self) -> tuple[int, ...] | None:
        """One item's shape of the first input, where known (fixed dimensions only)."""
        if self.signature is None:
            return None
        dims = self.signature.inputs[0].shape[1:]
        return None if any(d < 0 for d in dims) else dims

    def predict(self, items: Sequence[Any]) -> list[Any]:
        specs = self.input_specs
        known = self.signature is not None or self.item_dims is not None  # else any shape
        outputs: list[Any] = [None] * len(items)
        groups: dict[Any, list[tuple[int, Any]]] = {}
        first, count = specs[0], len(specs)
        # each input's spec, numpy type and item shape (None: any), worked out once a batch
        plan = [(s, numpy_dtype(s.datatype), s.shape[1:] if known else None) for s in specs]
        lone = plan[0] if count == 1 else None
        for index, item in enumerate(items):
            try:
                if lone is not None:  # the common case, kept lean: one array, its shape the key
                    value: Any = _decode(item, *lone, only=True)
                    key: Any = value.shape
                else:
                    value = [_decode(item, *step, only=False) for step in plan]
                    key = tuple(array.shape for array in value)
            except ItemDecodeError as exc:
                outputs[index] = error_output(str(exc))
                continue
            groups.setdefault(key, []).append((index, value))
        for key, members in groups.items():
            if count == 1:
                columns = {first.name: [value for _, value in members]}
            else:
                columns = {
                    spec.name: [value[i] for _, value in members] for i, spec in enumerate(specs)
                }
            try:
                named = self.run_batch(columns)
            except WorkerFailedError:
                raise  # the worker died with the batch: the whole batch fails
            except Exception as exc:
                shapes = [key] if count == 1 else key
                shown = ", ".join(str(list(shape)) for shape in shapes)
                message = f"the model failed on input of shape {shown}: {summary(exc)}"
                for index, _ in members:
                    outputs[index] = error_output(message)
                continue
            columns = {name: _json(array) for name, array in named.items()}  # one tolist each
            one = next(iter(columns.values())) if len(columns) == 1 else None
            for row, (index, _) in enumerate(members):
                outputs[index] = (
                    one[row] if one is not None else {n: c[row] for n, c in columns.items()}
                )
        return outputs

    def run_batch(self, columns: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """`run_named` on each input's items, stacked (a worker's predictor stacks them
        straight into shared memory instead)."""
        return self.run_named({name: np.stack(items) for name, items in columns.items()})

    def synthetic(self, rows: int) -> dict[str, np.ndarray] | None:
        """Inputs of `rows` rows made from the signature (variable dimensions 1; zeros,
        BYTES empty), for warm-up; None when the signature is not known."""
        if self.signature is None:
            return None
        made = {}
        for spec in self.signature.inputs:
            shape = (rows, *(1 if d < 0 else d for d in spec.shape[1:]))
            made[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
            if spec.datatype == "BYTES":
                made[spec.name][...] = b""  # empty strings
        return made

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        for rows in batch_sizes:
            inputs = self.synthetic(rows)
            if inputs is not None:
                self.run_named(inputs)

    def example_item(self) -> Any:
        inputs = self.synthetic(1)
        if inputs is None:
            return None
        if len(inputs) == 1:
            return {INPUT_NAME: next(iter(inputs.values()))[0].tolist()}
        return {name: array[0].tolist() for name, array in inputs.items()}


class TorchPredictor(TensorPredictor):
    """A TorchScript or (trusted) eager torch module."""

    def __init__(
        self,
        module: torch.nn.Module,
        device: str,
        dtype: str = "float32",
        warmup_shape: tuple[int, ...] | None = None,
        signature: Signature | None = None,
    ) -> None:
        self.device = device
        self._dtype = _DTYPES[dtype]
        self._module = module.to(device=device, dtype=self._dtype).eval()
        self._warmup_shape = warmup_shape
        self.signature = signature
        self._call = TorchCall(self._module)

    @property
    def item_dims(self) -> tuple[int, ...] | None:
        return super().item_dims if self.signature is not None else self._warmup_shape

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self.signature.outputs] if self.signature else []
        with torch.inference_mode():
            tensors = {name: self._tensor(array) for name, array in inputs.items()}
            result = self._call(tensors, names)
            return {name: _array(value) for name, value in result.items()}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        if not (array.flags.c_contiguous and array.flags.writeable):  # torch needs both
            array = np.array(array, order="C")
        tensor = torch.from_numpy(array)
        if tensor.is_floating_point():
            return tensor.to(self.device, self._dtype, non_blocking=True)
        return tensor.to(self.device, non_blocking=True)

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        if self.signature is None and self._warmup_shape is not None:
            # Nothing recorded: one float input of the first layer's width; the outputs
            # are learned from this run, so the v2 metadata can list them.
            inputs = {INPUT_NAME: np.zeros((1, *self._warmup_shape), dtype=np.float32)}
            outputs = self.run_named(inputs)
            self.signature = Signature(
                (TensorSpec(INPUT_NAME, "FP32", (-1, *self._warmup_shape)),),
                tuple(
                    TensorSpec(name, datatype_of(array), (-1, *array.shape[1:]))
                    for name, array in outputs.items()
                ),
            )
        super().warmup(batch_sizes)

    def close(self) -> None:
        del self._module


class OnnxPredictor(TensorPredictor):
    """An ONNX graph under onnxruntime: its inputs and outputs by the graph's names."""

    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device if providers[0].startswith("CUDA") else "cpu"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        inputs, outputs = ort_tensors(self._session)
        self.signature = Signature.from_json({"inputs": inputs, "outputs": outputs}, path.name)
        self._output_names = [spec.name for spec in self.signature.outputs]

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(None, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        del self._session


class NamedHandlerPredictor(TensorPredictor):
    """A handler that declares its `signature` (the JSON form `nexus store --signature`
    reads) and whose `predict` takes one batch as a dict of arrays (BYTES: arrays of
    bytes objects) and returns a dict of output arrays: served over v2 and `/predict` as
    the built-in predictors are."""

    def __init__(self, handler: Any, path: Path, device: str) -> None:
        self.device = device
        self._handler = handler
        self.signature = Signature.from_json(handler.signature, "the handler's signature")
        handler.load(path, device)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._handler.predict(dict(inputs))
        return {str(name): np.asarray(value) for name, value in result.items()}

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:
        hook = getattr(self._handler, "warmup", None)
        if hook is not None:
            hook()
        else:
            super().warmup(batch_sizes)

    def close(self) -> None:
        hook = getattr(self._handler, "close", None)
        if hook is not None:
            hook()
        del self._handler


def _decode(
    item: Any, spec: TensorSpec, dtype: np.dtype[Any], dims: tuple[int, ...] | None, only: bool
) -> np.ndarray:
    """One item's value of one input, as the signature's type and shape (`dims`: one item's
    shape, -1 for any size; None: any shape)."""
    if not isinstance(item, dict):
        raise ItemDecodeError(_needs(spec, only))
    key = INPUT_NAME if only and INPUT_NAME in item else spec.name
    if key not in item:
        raise ItemDecodeError(_needs(spec, only))
    try:
        array = np.asarray(item[key], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise ItemDecodeError(
            f"'{key}' must be a nested list of {spec.datatype} values with a regular shape."
        ) from None
    if (
        dims is not None
        and array.shape != dims
        and (  # the common case: fixed dims, equal
            len(array.shape) != len(dims)
            or any(d >= 0 and a != d for a, d in zip(array.shape, dims, strict=True))
        )
    ):
        expected = [d if d >= 0 else "any" for d in dims]
        raise ItemDecodeError(
            f"'{key}' has shape {list(array.shape)}; the model expects {expected}."
        )
    return array


def _needs(spec: TensorSpec, only: bool) -> str:
    if only:
        return 'each item must be an object {"input": <nested list of numbers>}.'
    return f"each item must be an object with the input '{spec.name}'."


def _json(value: Any) -> Any:
    """An output array (or part of one) as JSON values: BYTES elements as strings."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_json(element) for element in value]
    if not isinstance(value, np.ndarray):
        return value.item() if isinstance(value, np.generic) else value
    if value.dtype.kind == "O":
        return _json(value.tolist())
    return value.tolist()


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16
            value = value.float()
        return value.detach().cpu().numpy()  # type: ignore[no-any-return]
    raise TypeError(f"the model returned {type(value).__name__}, not tensors")
