"""The fixed pieces of one training run, built once from its config before anything is restored."""
from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import ml_collections
from etils import epath

from iln_jax.train.checkpoint import Checkpointer
from iln_jax.train.parallel import DataParallel
from iln_jax.train.phases import Phase, training_phases
from iln_jax.train.step_factory import StateFactory, StepFn, make_step


@dataclasses.dataclass(frozen=True)
class Run:
    config: ml_collections.ConfigDict
    config_dict: dict          # the config as saved with checkpoints and compared on resume
    workdir: epath.Path
    model: nn.Module
    parallel: DataParallel
    phases: list[Phase]
    init_state: StateFactory   # the first state (``make_step``)
    step_fn: StepFn            # the train step, not compiled yet
    checkpointer: Checkpointer

    @classmethod
    def build(cls, config: ml_collections.ConfigDict, workdir: epath.Path, model: nn.Module) -> "Run":
        """Checks that every phase's batch splits over the devices; creates ``checkpoints/``."""
        parallel = DataParallel(config.train.parallel)
        phases = training_phases(config)
        for phase in phases:
            parallel.check_batch_size(phase.batch_size)
        init_state, step_fn = make_step(config, model, parallel, patch_size=phases[0].patch_size)
        checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.train.max_to_keep,
                                    save_every=config.train.checkpoint_every,
                                    async_save=config.train.async_checkpointing)
        return cls(config, json.loads(config.to_json_best_effort()), workdir, model, parallel, phases,
                   init_state, step_fn, checkpointer)

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes the logs and prints."""
        return jax.process_index() == 0

    def say(self, message: str) -> None:
        """Print on the main process."""
        if self.is_main:
            print(message, flush=True)
