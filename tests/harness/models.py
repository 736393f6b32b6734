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
