"""What a run starts from: its own newest complete checkpoint, another run's weights, or nothing.

Resuming, in this order: find the newest complete checkpoint (``checkpoint.py``: damaged newer
ones are reported, then moved aside); check the saved config and state tree against this run's
(``resume.py``: a model change refuses before anything is changed); log the allowed config
changes; restore the state and the data stream of the phase the checkpoint was saved in; convert
the state to this model's ``scan_layers`` layout if it was saved in the other one. Because the
state carries the step and the rng and the data stream is restored too, the continued run
computes exactly what the uninterrupted run would have.

A run without checkpoints starts fresh from ``config.seed``, or from the weights of
``train.init_from`` (``resume.py``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Optional

import flax.linen as nn
import jax

from iln_jax.train import resume
from iln_jax.train.batches import close_stream, phase_stream
from iln_jax.train.phases import Phase, phase_at
from iln_jax.train.run import Run
from iln_jax.train.state import TrainState, relayout_state

_LAYOUTS = {True: "scanned", False: "unrolled"}


@dataclasses.dataclass(frozen=True)
class Start:
    state: TrainState
    step: int      # the last step already trained (0: none)
    phase: Phase   # the phase of the next step
    stream: Any    # that phase's data stream, positioned at the next step's batch
    origin: str    # for the start line: "from scratch", "resuming from step 6", ...


def initial_state(run: Run) -> Start:
    """Where the run starts: its newest complete checkpoint (after the resume checks), or a new
    state (from ``train.init_from``'s weights when given), with the data stream positioned to match."""
    step = run.checkpointer.newest_complete_step()
    return _fresh(run) if step is None else _resumed(run, step)


def _fresh(run: Run) -> Start:
    state, origin = run.init_state(), "from scratch"
    if run.config.train.init_from:
        state, source, notes = resume.init_from_weights(run.config.train.init_from, state, workdir=run.workdir,
                                                        config=run.config_dict, model=run.model)
        origin = f"from the weights of {source}"
        if notes:
            run.say(f"[iln_jax] init_from: this run's model differs from {source}'s in: " + "; ".join(notes))
    phase = phase_at(run.phases, 0)
    return Start(state, 0, phase, phase_stream(run.config, phase), origin)


def _resumed(run: Run, step: int) -> Start:
    saved = _saved_config(run, step)
    changes = resume.check_resume_config(saved, run.config_dict, workdir=run.workdir, step=step)
    saved_model = _saved_model(run.model, resume.saved_scan_layers(saved))
    abstract = run.init_state.for_model(saved_model).abstract()
    resume.check_state_tree(run.checkpointer.state_metadata(step), abstract, workdir=run.workdir, step=step)
    run.checkpointer.set_aside_broken()
    if changes:
        run.say(f"[iln_jax] resuming step {step} with a changed config (logged in {resume.CHANGES_FILE}):\n  "
                + "\n  ".join(resume.change_line(*c) for c in changes))
        if run.is_main:
            resume.log_config_changes(run.workdir, step, changes)
    phase = phase_at(run.phases, step)
    stream = phase_stream(run.config, phase)
    try:
        state, step = run.checkpointer.restore(abstract, stream, step)
    except BaseException:
        close_stream(stream)
        raise
    if saved_model is not run.model:
        state = _convert_layout(run, state, saved_model, step)
    return Start(state, step, phase, stream, f"resuming from step {step}")


def _saved_config(run: Run, step: int) -> Optional[dict]:
    """The config saved with ``step``, else the run's ``config.json`` (older checkpoints)."""
    saved = run.checkpointer.saved_config(step)
    if saved is None and (run.workdir / "config.json").is_file():
        saved = json.loads((run.workdir / "config.json").read_text())
    return saved


def _saved_model(model: nn.Module, saved_scan_layers: Optional[bool]) -> nn.Module:
    """The model in the layout the checkpoint holds (restored as saved, then converted)."""
    if saved_scan_layers is None or saved_scan_layers == bool(model.scan_layers):
        return model
    return model.clone(scan_layers=saved_scan_layers)


def _convert_layout(run: Run, state: TrainState, saved_model: nn.Module, step: int) -> TrainState:
    convert = functools.partial(relayout_state, source_model=saved_model, target_model=run.model)
    state = jax.jit(convert, out_shardings=run.parallel.replicated)(state)
    saved = bool(saved_model.scan_layers)
    run.say(f"[iln_jax] checkpoint step {step} holds the {_LAYOUTS[saved]} layout: converted to "
            f"the {_LAYOUTS[not saved]} one (scan_layers={not saved})")
    return state
