"""What every predictor is: a batch of items in, an output or a named failure per item."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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

    warmup_seconds: float = 0.0  # what the warm-up took (model_server.service.load_entry)

    def warmup(self, batch_sizes: Sequence[int] = (1,)) -> None:  # noqa: B027  # optional hook
        """Run batches of these sizes so no request pays for lazy initialisation."""

    def example_item(self) -> Any:
        """An item this model accepts (for docs and `nexus serve`'s curl line), if known."""
        return None

    def runtime(self) -> dict[str, Any]:
        """Where the model runs (`/model`): here, or in workers (how many, how confined)."""
        return {"process": "server"}

    def close(self) -> None:  # noqa: B027  # optional hook
        """Drop the model's weights; the predictor answers nothing after this."""


OUT_OF_MEMORY = "the model ran out of memory (MemoryError)"


def summary(exc: BaseException) -> str:
    """One line: TorchScript puts the real cause on the last line of a long message."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__
