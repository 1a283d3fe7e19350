"""What the converter needs to know about one official architecture."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import numpy as np

from iln_jax.convert.buffers import check_swin_buffer
from iln_jax.convert.mapping import Rename


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """``model_arch``/``defaults`` say how to build the Flax module; the rest how to name its tensors.

    buffers(module) -> the official buffers (name -> array) a strict PyTorch load expects.
    check_buffer(key, stored, expected_buffers) -> problem text or None.
    renames_from_torch / renames_to_torch: regex rewrites for official names that do not follow the
    module tree (e.g. Restormer's ``norm1.body.weight``).
    kwarg_renames: official constructor argument -> Flax field (e.g. the i-LN HAT's ``eps``).
    """

    model_arch: str
    sequences: frozenset[str]
    example_input: Callable[[nn.Module], tuple[int, ...]]
    buffers: Callable[[nn.Module], dict[str, np.ndarray]] = lambda module: {}
    check_buffer: Callable[[str, np.ndarray, dict], Optional[str]] = check_swin_buffer
    norm: str = "layernorm"
    norm_names: tuple[str, str] = ("weight", "bias")
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    renames_from_torch: tuple[Rename, ...] = ()
    renames_to_torch: tuple[Rename, ...] = ()
    kwarg_renames: dict[str, str] = dataclasses.field(default_factory=dict)

    def is_buffer(self, key: str, expected_buffers: dict) -> bool:
        return key in expected_buffers or key.endswith(("relative_position_index", "attn_mask")) \
            or "relative_position_index" in key


def sr_example_input(module) -> tuple[int, ...]:
    """An input whose size does not affect parameter shapes (except with ``ape``)."""
    side = module.img_size if getattr(module, "ape", False) else module.window_size
    return (1, side, side, module.in_chans)
