"""A new version's signature at store: derived where the file says it, or declared.

An ONNX graph names its inputs and outputs; a TorchScript module is run once on the
`--example-input` (an `.npz` of named arrays) and its outputs are read off the result; a
handler class (`--handler module:Class`) declares its own; a `--signature FILE` (JSON or
YAML) is taken as declared, but refused when it contradicts
what the model says. All of it before a byte is uploaded: a refused signature stores
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from control_plane.core.errors import UsageError
from control_plane.core.folders import SAVEDMODEL, FolderModel
from control_plane.core.formats import ONNX, TORCHSCRIPT
from control_plane.core.invoke import call_torch, datatype_of, onnx_tensors, savedmodel_tensors
from nexus_common.errors import HandlerSpecError
from nexus_common.handlers import import_class
from nexus_common.signature import Signature, SignatureError, TensorSpec


def signature_for(
    source: Path,
    fmt: str | None,
    declared_file: Path | None,
    example_input: Path | None,
    handler: str | None = None,
    folder: FolderModel | None = None,
) -> Signature | None:
    """The signature to record with a version stored from `source` (None: none known);
    `folder` is what a directory model was recognised as."""
    declared = read_signature_file(declared_file) if declared_file is not None else None
    if handler is not None:
        declared_by_handler = handler_signature(handler)
        if declared is not None:
            problem = declared.contradiction(declared_by_handler)
            if problem is not None:
                raise SignatureError(
                    f"the signature in {declared_file} and {handler}'s differ: {problem}"
                )
        return declared or declared_by_handler
    if example_input is not None and fmt != TORCHSCRIPT:
        raise UsageError(
            "--example-input runs a TorchScript module once to learn its signature; "
            f"{source.name} is {fmt or 'not a model file the store recognises'}.",
            hint="give an ONNX model nothing (its graph says it), others --signature FILE",
        )
    derived = _derived(source, folder.format if folder else fmt, example_input, declared)
    if folder is not None and folder.signature is not None:
        derived = Signature.from_json(folder.signature, f"{source.name}'s task")
    if declared is None or derived is None:
        return declared or derived
    problem = declared.contradiction(derived)
    if problem is not None:
        raise SignatureError(
            f"the signature in {declared_file} does not match the model: {problem}"
        )
    return declared


def handler_signature(spec: str) -> Signature:
    """The signature a handler class declares (its `signature` attribute), read without
    making one: `module:Class`, importable here as the model server will import it."""
    try:
        cls = import_class(spec)
    except HandlerSpecError as exc:
        raise UsageError(f"--handler: {exc.message}") from None
    raw = getattr(cls, "signature", None)
    if raw is None:
        raise UsageError(
            f"the handler '{spec}' declares no signature (a class attribute 'signature').",
            hint="declare one, or give the model's inputs and outputs with --signature FILE",
        )
    return Signature.from_json(raw, f"{spec}'s signature")


def read_signature_file(path: Path) -> Signature:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the signature file {path}: {exc.strerror}.") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SignatureError(f"{path} is not JSON or YAML: {exc}") from None
    return Signature.from_json(raw, str(path))


def _derived(
    source: Path, fmt: str | None, example_input: Path | None, declared: Signature | None
) -> Signature | None:
    if fmt == ONNX:
        try:
            inputs, outputs = onnx_tensors(source)
        except ImportError:
            return None  # neither onnx nor onnxruntime here: the server learns it at load
        return Signature.from_json({"inputs": inputs, "outputs": outputs}, source.name)
    if fmt == SAVEDMODEL:
        try:
            inputs, outputs = savedmodel_tensors(source)
        except ImportError:
            raise UsageError(
                f"{source.name} is a TensorFlow SavedModel; its signature is read with "
                "TensorFlow, which is not installed.",
                hint="pip install 'nexusml[tensorflow]'",
            ) from None
        return Signature.from_json({"inputs": inputs, "outputs": outputs}, source.name)
    if fmt == TORCHSCRIPT and example_input is not None:
        names = [spec.name for spec in declared.outputs] if declared is not None else []
        return _run_torchscript(source, example_input, names)
    return None


def _run_torchscript(source: Path, example_input: Path, output_names: list[str]) -> Signature:
    import numpy as np
    import torch

    try:
        with np.load(example_input, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{example_input} is not an .npz file of named arrays: {exc}") from None
    if not arrays:
        raise UsageError(f"{example_input} holds no arrays.")
    module = torch.jit.load(str(source), map_location="cpu")  # type: ignore[no-untyped-call]
    try:
        with torch.inference_mode():
            result = call_torch(
                module, {name: torch.from_numpy(a) for name, a in arrays.items()}, output_names
            )
            outputs = {name: _numpy(value) for name, value in result.items()}
    except Exception as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else type(exc).__name__
        raise SignatureError(f"{source.name} failed on {example_input.name}: {reason}") from None
    return Signature(_specs(arrays), _specs(outputs))


def _specs(arrays: dict[str, Any]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(name, datatype_of(array), (-1, *array.shape[1:]))
        for name, array in arrays.items()
    )


def _numpy(value: Any) -> Any:
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"an output is {type(value).__name__}, not a tensor")
    return (value.float() if value.dtype == torch.bfloat16 else value).detach().numpy()
