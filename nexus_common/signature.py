"""A model's signature: the tensors it takes and returns, recorded with its version.

Each tensor has a name, an Open Inference Protocol datatype and a shape in which -1 is a
variable dimension (the first is the batch). Stored in an entry as `tensors`:

    {"inputs":  [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}, ...],
     "outputs": [{"name": "OUTPUT0", "datatype": "INT32", "shape": [-1, 16]}, ...]}

(`signature` in an entry is the trust record of a signed version, older than this.)
`nexus store` derives it from the file where the file says it (an ONNX graph; a
TorchScript module run once on an example input) or reads it from `--signature FILE`, and
refuses one that contradicts the model (SignatureError). On the floor: the registry records
it, the model server serves by it, and the proxy checks requests against it before they
are batched (`check_request`, one set of sentences for both servers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nexus_common.errors import SignatureError as SignatureError  # a signature's own error

DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"{self.datatype} {list(self.shape)}"

    def accepts(self, datatype: str, shape: Sequence[int]) -> str | None:
        """None when a tensor of `datatype` and `shape` fits this spec; else what is wrong."""
        if datatype != self.datatype:
            return f"is {datatype}; the model takes {self.describe()}"
        if len(shape) != len(self.shape):
            return f"has shape {list(shape)}; the model takes {self.describe()}"
        if any(
            want != -1 and got != want for got, want in zip(shape[1:], self.shape[1:], strict=False)
        ):
            return f"has shape {list(shape)}; the model takes {self.describe()}"
        return None


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def summary(self) -> str:
        """One line: `INPUT0 INT32 [-1, 16], … -> OUTPUT0 INT32 [-1, 16], …`."""

        def side(specs: tuple[TensorSpec, ...]) -> str:
            return ", ".join(f"{spec.name} {spec.describe()}" for spec in specs) or "(unknown)"

        return f"{side(self.inputs)} -> {side(self.outputs)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
        }

    @classmethod
    def from_json(cls, raw: Any, source: str = "the signature") -> Signature:
        """Parse and check one (from `--signature FILE` or an entry); SignatureError names
        the first fault."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("inputs"), list):
            raise SignatureError(f'{source} must be an object with a list of "inputs".')
        outputs = raw.get("outputs", [])
        if not isinstance(outputs, list):
            raise SignatureError(f'{source}: "outputs" must be a list.')
        inputs = tuple(_spec(item, source, "input") for item in raw["inputs"])
        parsed = cls(inputs, tuple(_spec(item, source, "output") for item in outputs))
        if not parsed.inputs:
            raise SignatureError(f"{source} names no input.")
        for role, specs in (("input", parsed.inputs), ("output", parsed.outputs)):
            _unique((spec.name for spec in specs), source, role)
        return parsed

    def contradiction(self, model: Signature) -> str | None:
        """Where this (declared) signature contradicts what the model itself says, naming
        the tensor; None when they agree. A dimension the model leaves variable (-1) may be
        fixed here; outputs the model does not name (a TorchScript module) are not compared."""
        for role, declared, actual in (
            ("input", self.inputs, model.inputs),
            ("output", self.outputs, model.outputs),
        ):
            if role == "output" and not actual:
                continue
            known = {spec.name: spec for spec in actual}
            for spec in declared:
                found = known.get(spec.name)
                if found is None:
                    names = ", ".join(sorted(known)) or "none"
                    return f"the model has no {role} '{spec.name}' (its {role}s: {names})."
                if found.datatype != spec.datatype:
                    return (
                        f"{role} '{spec.name}' is {spec.datatype} in the signature but "
                        f"{found.datatype} in the model."
                    )
                if len(found.shape) != len(spec.shape) or any(
                    have not in (-1, want)
                    for have, want in zip(found.shape, spec.shape, strict=True)
                ):
                    return (
                        f"{role} '{spec.name}' has shape {list(spec.shape)} in the signature "
                        f"but {list(found.shape)} in the model."
                    )
            missing = sorted(set(known) - {spec.name for spec in declared})
            if missing and role == "input":
                return f"the signature leaves out the model's input '{missing[0]}'."
        return None


def _spec(raw: Any, source: str, role: str) -> TensorSpec:
    if not isinstance(raw, Mapping):
        raise SignatureError(f"{source}: each {role} must be an object with a name.")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise SignatureError(f"{source}: an {role} has no name.")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise SignatureError(
            f"{source}: {role} '{name}' has datatype {datatype!r}; use one of "
            + ", ".join(DATATYPES)
            + "."
        )
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape)
        or 0 in shape
    ):
        raise SignatureError(
            f"{source}: {role} '{name}' needs a shape: a list of sizes with -1 for a variable "
            "one, the first the batch (e.g. [-1, 16])."
        )
    return TensorSpec(name, str(datatype), tuple(shape))


def _unique(names: Iterable[str], source: str, role: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SignatureError(f"{source}: the {role} '{name}' is named twice.")
        seen.add(name)


def check_request(
    signature: Signature, inputs: Sequence[tuple[str, str, Sequence[int]]], outputs: Iterable[str]
) -> str | None:
    """What is wrong with a v2 request of these inputs (name, datatype, shape) asking for
    these outputs, as one sentence naming the tensor and what the model takes; None when
    nothing is. Outputs are checked only where the signature lists them. (On every request
    of both servers: the sentences are made only when one is needed.)"""
    specs = signature.inputs
    for name, datatype, shape in inputs:
        spec = next((s for s in specs if s.name == name), None)
        if spec is None:
            return f"the model has no input '{name}'; it takes {_takes(signature)}."
        wrong = spec.accepts(datatype, shape)
        if wrong is not None:
            return f"input '{name}' {wrong}."
    if len(inputs) != len(specs) or len({name for name, _, _ in inputs}) != len(specs):
        given = {name for name, _, _ in inputs}
        missing = next((s.name for s in specs if s.name not in given), None)
        if missing is not None:
            return f"input '{missing}' is missing; the model takes {_takes(signature)}."
    if signature.outputs:
        for name in outputs:
            if all(spec.name != name for spec in signature.outputs):
                listed = ", ".join(f"'{spec.name}'" for spec in signature.outputs)
                return f"the model has no output '{name}'; it returns {listed}."
    return None


def _takes(signature: Signature) -> str:
    return ", ".join(f"'{spec.name}' ({spec.describe()})" for spec in signature.inputs)
