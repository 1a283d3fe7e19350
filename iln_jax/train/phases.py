"""Progressive patch training (Restormer's recipe): the run is a sequence of phases, each with its
own patch and batch size, e.g. GT 128 px x 64 for 92k steps, then 160 px x 40 for 64k, ...

A config without a ``progressive`` block (or with one phase) is a single phase with
``data.patch_size`` / ``data.batch_size`` for every step. The last phase runs to
``train.num_steps`` if that is longer than the phases' total (BasicSR keeps the last phase).

Each phase reads its own deterministic data stream, seeded ``config.seed + phase index``, so that a
run resumed in any phase sees the batches the uninterrupted run saw: the checkpoint holds the
iterator state of the phase it was saved in, and a resume at a phase's last step starts the next
phase's stream fresh, exactly as the uninterrupted run does.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from iln_jax.data.config import effective_scale


@dataclasses.dataclass(frozen=True)
class Phase:
    index: int
    first_step: int    # steps are counted from 1
    last_step: int
    gt_size: int       # target patch side
    patch_size: int    # input patch side (gt_size / scale for SR)
    batch_size: int    # global

    def contains(self, step: int) -> bool:
        return self.first_step <= step <= self.last_step

    def data_config(self, data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """``data`` with this phase's patch and batch size."""
        out = ml_collections.ConfigDict(data.to_dict())
        out.patch_size = self.patch_size
        out.batch_size = self.batch_size
        return out


def training_phases(config: ml_collections.ConfigDict) -> list[Phase]:
    """The run's phases in order (see the module docstring); validates the ``progressive`` block."""
    num_steps = int(config.train.num_steps)
    scale = effective_scale(config.data)
    progressive = config.get("progressive")
    if progressive is None or len(progressive.gt_sizes) <= 1:
        p = int(config.data.patch_size)
        return [Phase(0, 1, num_steps, p * scale, p, int(config.data.batch_size))]
    gt_sizes, batch_sizes, iters = (tuple(progressive[k]) for k in ("gt_sizes", "batch_sizes", "iters"))
    if not len(gt_sizes) == len(batch_sizes) == len(iters):
        raise ValueError(f"progressive.gt_sizes / batch_sizes / iters must have one entry per phase, got "
                         f"{len(gt_sizes)} / {len(batch_sizes)} / {len(iters)}")
    phases, first = [], 1
    for i, (gt, batch, n) in enumerate(zip(gt_sizes, batch_sizes, iters)):
        if gt % scale:
            raise ValueError(f"progressive.gt_sizes[{i}]={gt} is not divisible by the scale {scale}")
        if n < 1 or batch < 1:
            raise ValueError(f"progressive phase {i}: iters and batch_sizes must be >= 1, got {n}, {batch}")
        last = first + n - 1 if i < len(gt_sizes) - 1 else max(first + n - 1, num_steps)
        phases.append(Phase(i, first, last, int(gt), int(gt) // scale, int(batch)))
        first = last + 1
    return phases


def phase_at(phases: list[Phase], step: int) -> Phase:
    """The phase that runs ``step`` (1-based); step 0 (nothing run yet) is in the first phase."""
    for phase in phases:
        if phase.contains(max(step, 1)):
            return phase
    return phases[-1]
