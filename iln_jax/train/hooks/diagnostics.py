"""The paper's per-block feature statistics during training, into ``<workdir>/diagnostics.jsonl``."""
from __future__ import annotations

from typing import Callable, Optional

import jax

from iln_jax import diagnostics
from iln_jax.train.hooks.base import Hook, Step
from iln_jax.train.state import TrainState, local_replica


class Diagnostics(Hook):
    """Every ``train.diagnostics_every`` steps and at the run's final step (so that a run shorter
    than the interval has them too), the statistics of the raw weights on the first
    ``train.diagnostics_images`` inputs of the global batch: one small forward pass.

    ``mesh``: every process computes them on the mesh, on the batch already on the devices;
    ``pmap``: process 0 alone, on its replica and its own first inputs.
    """

    aside = True

    def __init__(self, diagnose: Callable, log: diagnostics.DiagnosticsLog, *, every: int, on_mesh: bool, images: int):
        self.diagnose, self.log = diagnose, log
        self.every, self.on_mesh, self.images = every, on_mesh, images

    @classmethod
    def for_run(cls, config, model, workdir, *, mode: str, start: int) -> Optional["Diagnostics"]:
        """The run's diagnostics (None when off: ``train.diagnostics_every`` 0, or a process
        other than 0 under pmap). The log drops rows after ``start`` (left by a killed run)."""
        every, images = config.train.diagnostics_every, config.train.diagnostics_images
        is_main = jax.process_index() == 0
        if every <= 0 or not (is_main or mode == "mesh"):
            return None
        return cls(diagnostics.make_diagnostics_fn(model, max_images=images),
                   diagnostics.DiagnosticsLog(workdir, resume_step=start, enabled=is_main),
                   every=every, on_mesh=mode == "mesh", images=images)

    def __call__(self, step: Step) -> None:
        if not step.due(self.every):
            return
        if self.on_mesh:
            values = self.diagnose(step.state.variables("raw"), step.batch["lq"])
        else:
            lq = jax.device_put(step.local_batch["lq"][:self.images], jax.local_devices()[0])
            values = self.diagnose(local_replica(step.state.variables("raw")), lq)
        self.log.write(step.number, values)

    def finish(self, state: TrainState, step: int, status: Optional[str]) -> dict:
        # A run stopped before its first diagnostics step has none: the summary names no file.
        return {"diagnostics": str(self.log.path)} if self.log.path.exists() else {}
