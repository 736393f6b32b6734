"""A TensorFlow SavedModel served through its `serving_default` signature: named inputs and
outputs, as the signature gives them (`nexusml[tensorflow]`, the CPU build by default)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from control_plane.core.invoke import savedmodel_specs
from model_server.errors import ModelLoadError
from model_server.tensors import TensorPredictor
from nexus_common.signature import Signature


class SavedModelPredictor(TensorPredictor):
    def __init__(self, path: Path, device: str, threads: int | None = None) -> None:
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise ModelLoadError(
                f"{path.name} is a TensorFlow SavedModel, and TensorFlow is not installed.",
                hint="pip install 'nexusml[tensorflow]'",
            ) from exc
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        self._tf = tf
        loaded = tf.saved_model.load(str(path))
        signatures = getattr(loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise ModelLoadError(f"{path.name} has no serving_default signature to serve.")
        self._loaded = loaded  # the function's variables live as long as the object
        self._function = signatures["serving_default"]
        gpus = tf.config.list_logical_devices("GPU")
        self.device = "cuda" if device.startswith("cuda") and gpus else "cpu"
        inputs, outputs = savedmodel_specs(self._function)
        self.signature = Signature.from_json({"inputs": inputs, "outputs": outputs}, path.name)

    def run_named(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        result = self._function(**{name: tf.constant(array) for name, array in inputs.items()})
        return {name: np.asarray(tensor.numpy()) for name, tensor in result.items()}

    def close(self) -> None:
        del self._function, self._loaded
