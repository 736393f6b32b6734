"""How a model file is called with named arrays, and what its outputs are called.

One convention for `nexus store` (which runs a TorchScript module once on an example to
learn its signature, and reads an ONNX graph's) and for the model server (which serves
them): an ONNX session is fed by its graph's input names; a TorchScript module by its
`forward`'s parameters: a dict parameter gets every input as a dict, a tuple parameter
gets them as a tuple in signature order, plain parameters get one input each, by name
where the names match and in order where they do not. Outputs: a tensor is `output` (or
the signature's one output), a tuple is `output0`, `output1`, … (or the signature's names,
in order), a dict keeps its keys. torch, numpy and onnxruntime load on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_common.signature import SignatureError

if TYPE_CHECKING:
    import numpy as np

# ONNX TensorProto element types -> Open Inference Protocol datatypes.
ONNX_DATATYPES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BF16",
}  # fmt: skip
# onnxruntime's type strings -> the same.
ORT_DATATYPES = {
    "tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
    "tensor(uint16)": "UINT16", "tensor(int16)": "INT16", "tensor(int32)": "INT32",
    "tensor(int64)": "INT64", "tensor(string)": "BYTES", "tensor(bool)": "BOOL",
    "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64", "tensor(bfloat16)": "BF16",
}  # fmt: skip
NUMPY_DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}  # fmt: skip


@functools.cache
def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy type of an Open Inference Protocol datatype (little-endian; BYTES: object,
    BF16: float32, which numpy lacks)."""
    import numpy as np

    if datatype == "BYTES":
        return np.dtype(object)
    if datatype == "BF16":
        return np.dtype("<f4")
    names = {v: k for k, v in NUMPY_DATATYPES.items()}
    if datatype not in names:
        raise SignatureError(f"'{datatype}' is not an Open Inference Protocol datatype.")
    return np.dtype(names[datatype]).newbyteorder("<")


def datatype_of(array: np.ndarray) -> str:
    """An array's Open Inference Protocol datatype (strings and bytes: BYTES)."""
    return _datatype_of_dtype(array.dtype)


@functools.cache
def _datatype_of_dtype(dtype: np.dtype[Any]) -> str:
    """Per dtype, once: numpy's `dtype.name` is computed in Python on every read."""
    if dtype.kind in "OSU":
        return "BYTES"
    name = NUMPY_DATATYPES.get(dtype.name)
    if name is None:
        raise SignatureError(f"arrays of {dtype} have no Open Inference Protocol datatype.")
    return name


def onnx_tensors(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An ONNX graph's inputs and outputs as `{"name", "datatype", "shape"}` (-1 for a
    symbolic dimension), read with onnx where installed, else onnxruntime."""
    try:
        import onnx
    except ImportError:
        return _ort_tensors(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {initializer.name for initializer in graph.initializer}

    def spec(value: Any) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return {
            "name": value.name,
            "datatype": ONNX_DATATYPES.get(tensor.elem_type, "FP32"),
            "shape": dims,
        }

    inputs = [spec(v) for v in graph.input if v.name not in constants]
    return inputs, [spec(v) for v in graph.output]


def _ort_tensors(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort_tensors(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))


def ort_tensors(session: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An onnxruntime session's inputs and outputs, as `onnx_tensors` gives them."""

    def spec(arg: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or [])]
        return {"name": arg.name, "datatype": ORT_DATATYPES.get(arg.type, "FP32"), "shape": shape}

    return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]


# TensorFlow's dtype names -> Open Inference Protocol datatypes.
TF_DATATYPES = {
    "float32": "FP32", "float16": "FP16", "float64": "FP64", "bfloat16": "BF16",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
    "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
    "string": "BYTES",
}  # fmt: skip


def savedmodel_tensors(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A SavedModel's `serving_default` inputs and outputs, as `onnx_tensors` gives them
    (ImportError without TensorFlow)."""
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    return savedmodel_specs(function)


def savedmodel_specs(function: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A concrete function's named inputs and outputs (a None dimension is -1)."""

    def spec(name: str, tensor: Any) -> dict[str, Any]:
        dims = [-1 if d is None else int(d) for d in tensor.shape.as_list()]
        datatype = TF_DATATYPES.get(tensor.dtype.name)
        if datatype is None:
            raise SignatureError(f"'{name}' is a {tensor.dtype.name} tensor, which v2 lacks.")
        return {"name": name, "datatype": datatype, "shape": dims}

    _, named_inputs = function.structured_input_signature
    inputs = [spec(name, t) for name, t in sorted(named_inputs.items())]
    outputs = [spec(name, t) for name, t in sorted(function.structured_outputs.items())]
    return inputs, outputs


def call_torch(
    module: Any, inputs: Mapping[str, Any], output_names: Sequence[str] = ()
) -> dict[str, Any]:
    """Call a TorchScript (or eager) module with named tensors; its outputs, named."""
    return TorchCall(module)(inputs, output_names)


class TorchCall:
    """A module's calling convention, read once from its `forward` (the server calls it for
    every batch)."""

    __slots__ = ("module", "names", "tensor", "whole")

    def __init__(self, module: Any) -> None:
        import torch

        self.module = module
        self.tensor = torch.Tensor  # one output, the common case: named without ABC checks
        parameters = _parameters(module)
        # "dict" / "tuple": one parameter takes every input at once; None: one each
        self.whole: str | None = None
        if len(parameters) == 1:
            kind = parameters[0][1]
            if kind.startswith("Dict"):
                self.whole = "dict"
            elif kind.startswith(("Tuple", "List")):
                self.whole = "tuple"
        self.names = [name for name, _ in parameters]

    def __call__(
        self, inputs: Mapping[str, Any], output_names: Sequence[str] = ()
    ) -> dict[str, Any]:
        result = self.module(*self._arguments(inputs))
        if type(result) is self.tensor:
            return {output_names[0] if len(output_names) == 1 else "output": result}
        return name_outputs(result, output_names)

    def _arguments(self, inputs: Mapping[str, Any]) -> list[Any]:
        if self.whole == "dict":
            return [dict(inputs)]
        if self.whole == "tuple" and len(inputs) > 1:
            return [tuple(inputs.values())]
        if len(inputs) > 1 and set(self.names) == set(inputs):
            return [inputs[name] for name in self.names]
        return list(inputs.values())


def _parameters(module: Any) -> list[tuple[str, str]]:
    """`forward`'s parameters past self, with their TorchScript types ('' when unknown)."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is None:
        return []
    return [(arg.name, str(arg.type)) for arg in schema.arguments if arg.name != "self"]


def name_outputs(result: Any, names: Sequence[str] = ()) -> dict[str, Any]:
    """A model's result as named outputs (see the module's docstring)."""
    if isinstance(result, Mapping):
        return {str(key): value for key, value in result.items()}
    if isinstance(result, tuple | list):
        if names and len(names) == len(result):
            return dict(zip(names, result, strict=True))
        return {f"output{i}": value for i, value in enumerate(result)}
    return {names[0] if len(names) == 1 else "output": result}
