"""Tiny real models for tests: a TorchScript MLP and the same net exported to ONNX, and a
small image CNN (NCHW float32 in, 5 scores out)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

IN_FEATURES = 4
OUT_FEATURES = 3


class TinyMLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(IN_FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, OUT_FEATURES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3, stride=4)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(pooled)


def make_cnn(path: Path) -> torch.jit.ScriptModule:
    module = torch.jit.script(TinyCNN().eval())
    module.save(str(path))
    return module


def make_torchscript(path: Path) -> torch.nn.Module:
    model = TinyMLP().eval()
    torch.jit.script(model).save(str(path))
    return model


def make_onnx(path: Path) -> torch.nn.Module:
    model = TinyMLP().eval()
    # The TorchScript-based exporter is deprecated but fast and needs no extra packages;
    # its deprecation warnings are about the exporter, not about the code under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(model, path)
    return model


def _export(model: torch.nn.Module, path: Path) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, IN_FEATURES),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        dynamo=False,
    )


def make_state_dict(path: Path) -> torch.nn.Module:
    model = TinyMLP().eval()
    torch.save(model.state_dict(), path)
    return model


SUM_DIFF_WIDTH = 16


def make_sum_diff_onnx(path: Path) -> None:
    """Triton's own example model ("simple"): INT32 `INPUT0` and `INPUT1` [-1, 16] in,
    `OUTPUT0` (their sum) and `OUTPUT1` (their difference) out. Built with onnx.helper,
    no exporter."""
    from onnx import TensorProto, ValueInfoProto, helper, save

    def tensor(name: str) -> ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", SUM_DIFF_WIDTH])

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "sum_diff",
        [tensor("INPUT0"), tensor("INPUT1")],
        [tensor("OUTPUT0"), tensor("OUTPUT1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what the onnxruntime here reads
    save(model, str(path))


class PairModel(torch.nn.Module):
    """A TorchScript model of two named float inputs and two outputs (a tuple)."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return left + right, left * right


class DictModel(torch.nn.Module):
    """A TorchScript model taking a dict of two inputs and answering a dict of two."""

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"total": inputs["a"] + inputs["b"], "scaled": inputs["a"] * 2.0}


def make_pair_torchscript(path: Path) -> None:
    torch.jit.save(torch.jit.script(PairModel()), str(path))


def make_dict_torchscript(path: Path) -> None:
    torch.jit.save(torch.jit.script(DictModel()), str(path))


class NeedsNonZero(torch.nn.Module):
    """A model that fails on an all-zero batch: its warm-up (synthetic zeros) fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == 0).all()):
            raise RuntimeError("an all-zero batch is not a real input")
        return x * 2


def make_needs_nonzero_torchscript(path: Path) -> None:
    torch.jit.save(torch.jit.script(NeedsNonZero()), str(path))
