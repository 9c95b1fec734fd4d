"""What one distillation iteration draws: an expert, a start epoch and the student's plans.

Each comes from its own seeded generator (:func:`run_seeds`), all checkpointed, so a resumed run
draws exactly what an uninterrupted one would. Used by :class:`mttlib.distill.Distiller`; taught in
notebook ``02_trajectory_matching``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mttlib.train import derive_seed

__all__ = ["ExpertSampler", "run_seeds", "Draw"]


class ExpertSampler:
    """Draws ``(expert, start epoch)`` uniformly, from its own seeded generator (checkpointed)."""

    def __init__(self, num_experts: int, max_start_epoch: int, seed: int) -> None:
        if num_experts < 1 or max_start_epoch < 1:
            raise ValueError(f"need experts and max_start_epoch >= 1, got {num_experts} and {max_start_epoch}")
        self.num_experts, self.max_start_epoch = int(num_experts), int(max_start_epoch)
        self.generator = torch.Generator().manual_seed(int(seed))

    def sample(self, low: int = 0, high: int | None = None) -> tuple[int, int]:
        """The next ``(expert index, start epoch)``, the start epoch uniform in ``[low, high)``
        (default ``[0, max_start_epoch)``; a start-epoch schedule passes its window)."""
        high = self.max_start_epoch if high is None else int(high)
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high for the start epochs, got [{low}, {high})")
        expert = int(torch.randint(self.num_experts, (1,), generator=self.generator))
        return expert, int(low) + int(torch.randint(high - int(low), (1,), generator=self.generator))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same sequence of draws."""
        return {"num_experts": self.num_experts, "max_start_epoch": self.max_start_epoch,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the counts must match)."""
        if (state["num_experts"], state["max_start_epoch"]) != (self.num_experts, self.max_start_epoch):
            raise ValueError(f"the checkpoint sampled from {state['num_experts']} experts below start epoch "
                             f"{state['max_start_epoch']}; resume with the same experts and max_start_epoch")
        self.generator.set_state(state["generator"])


def run_seeds(seed: int) -> dict[str, int]:
    """The independent seeds of a run: initialisation, the loop's plans and the expert sampler."""
    return {name: derive_seed("mttlib.distill", int(seed), name) for name in ("init", "loop", "sampler")}


@dataclass
class Draw:
    """The randomness of one iteration: which expert, which start epoch, the student's plans."""
    expert: int
    start_epoch: int
    plans: list[dict[str, Any]]
    start_upper: int  # the start epoch was drawn below this bound (it rises with DATM's schedule)
