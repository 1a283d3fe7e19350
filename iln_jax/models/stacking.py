"""How repeated blocks are executed: unrolled or scanned (``scan_layers``), and rematerialised
(``remat_policy``). Options, not classes: every backbone calls these helpers with its own blocks.

Scanning (``nn.scan``) traces a repeated block once, so compile time and program size stop growing
with depth; the parameters of the repeated blocks are stacked along a new leading axis (see
``iln_jax.models.scan_layout`` for the correspondence with the unrolled names that the official
checkpoints use). Every variable collection is stacked (``variable_axes={True: 0}``): BatchNorm's
statistics, captured intermediates and any collection a user's norm keeps. Per-layer values such as
the stochastic-depth rates are scanned arrays.

Rematerialisation recomputes a block's forward pass during the backward pass instead of keeping its
activations; the policy says what is kept anyway.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from iln_jax.layers.conv import CONV_OUTPUT
from iln_jax.layers.linear import LINEAR_OUTPUT
from iln_jax.layers.swin import effective_window
from iln_jax.models import ordered_remat

# Linear layers and convolutions hide their matmul/convolution inside a custom VJP or another
# formulation on CPU (iln_jax/layers/linear.py, conv.py); their outputs are named so that the
# matmul- and conv-keeping policies keep them on every backend alike.
_policies = jax.checkpoint_policies
_LINEAR_OUTPUTS = _policies.save_only_these_names(LINEAR_OUTPUT)
_LINEAR_AND_CONV_OUTPUTS = _policies.save_only_these_names(LINEAR_OUTPUT, CONV_OUTPUT)

# remat_policy name -> the jax.checkpoint policy (None: no rematerialisation).
REMAT_POLICIES: dict[str, Optional[Callable]] = {
    "none": None,
    # Recompute each transformer block; keep only its input.
    "block": _policies.nothing_saveable,
    # Keep the outputs of the token-wise matmuls (qkv, proj, MLP), recompute norms, attention
    # softmax, convolutions and elementwise ops.
    "dots": _policies.save_from_both_policies(_policies.dots_with_no_batch_dims_saveable, _LINEAR_OUTPUTS),
    # Keep every matmul and convolution output (incl. the batched attention products).
    "dots_and_convs": _policies.save_from_both_policies(_policies.dots_saveable, _LINEAR_AND_CONV_OUTPUTS),
    # Keep the token-wise matmuls and the convolutions, recompute the attention (its logits and
    # probabilities are the largest activations of windowed attention): close to "dots" in memory
    # at less recompute time (docs/design_measurements.md).
    "dots_no_batch_and_convs": _policies.save_from_both_policies(_policies.dots_with_no_batch_dims_saveable,
                                                                 _LINEAR_AND_CONV_OUTPUTS),
}
SCAN_RNGS = {"params": True, "dropout": True}


def remat_policy_name(remat_policy: str, use_checkpoint: bool) -> str:
    """The effective policy: the official ``use_checkpoint=True`` means ``"block"``."""
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat_policy {remat_policy!r}; valid: {', '.join(REMAT_POLICIES)}")
    if use_checkpoint and remat_policy == "none":
        return "block"
    return remat_policy


def remat(block_cls: type, policy_name: str, scanned: bool) -> type:
    """``block_cls`` rematerialised under ``policy_name`` (unchanged for ``"none"``).

    Inside a scan the loop boundary already stops XLA from merging the recomputation back into the
    forward pass, so CSE prevention (which costs speed) is only needed unrolled. Unrolled on the
    CPU, where XLA drops ``jax.checkpoint``'s CSE barriers, the recomputation is tied to the
    backward pass instead (:mod:`iln_jax.models.ordered_remat`).
    """
    if policy_name == "none":
        return block_cls
    policy = REMAT_POLICIES[policy_name]
    if not scanned and jax.default_backend() == "cpu":
        return ordered_remat.remat(block_cls, policy)
    return nn.remat(block_cls, policy=policy, prevent_cse=not scanned)


def scan(module: nn.Module, carry, xs=None, *, length: int, call: Optional[Callable] = None):
    """Apply ``module`` ``length`` times, threading ``carry``; its variables stacked on axis 0.

    ``xs`` (a pytree with leading axis ``length``, or None) gives each layer its own values;
    ``call(module, carry, xs_i) -> carry`` says how a layer is applied (default ``module(carry, xs_i)``).
    """
    call = call or (lambda m, c, per_layer: m(c, per_layer))
    body = nn.scan(lambda m, c, per_layer: (call(m, c, per_layer), None), variable_axes={True: 0},
                   split_rngs=SCAN_RNGS, in_axes=0 if xs is not None else nn.broadcast, length=length)
    return body(module, carry, xs)[0]


def as_rates(rates: Optional[Sequence[float]], scanned: bool):
    """Stochastic-depth rates as the blocks take them: Python floats unrolled (a zero rate then
    costs nothing), an array when scanned, None when every rate is zero."""
    if rates is None or not any(rates):
        return None
    return jnp.asarray(rates, jnp.float32) if scanned else tuple(float(r) for r in rates)


def rate_at(rates, index):
    return None if rates is None else rates[index]


class BlockPair(nn.Module):
    """One scan step of a Swin stage: an unshifted block, then a shifted one."""

    block: Callable[..., nn.Module]
    unshifted: tuple[int, int]  # (window, shift)
    shifted: tuple[int, int]

    @nn.compact
    def __call__(self, x, rates):
        window, shift = self.unshifted
        x = self.block(window_size=window, shift_size=shift, drop_path=rate_at(rates, 0), name="unshifted")(x)
        window, shift = self.shifted
        return self.block(window_size=window, shift_size=shift, drop_path=rate_at(rates, 1), name="shifted")(x)


def alternating_blocks(block: Callable[..., nn.Module], x, *, depth: int, window_size: int, img_size: int,
                       rates: Any, scanned: bool):
    """``depth`` Swin blocks, shift 0 for even and window/2 for odd ones, in the calling module.

    ``block(window_size=, shift_size=, drop_path=, name=)`` makes one block. Unrolled the blocks are
    ``blocks_{j}``; scanned they are ``pairs/{unshifted,shifted}`` stacked over the depth // 2
    pairs, plus ``tail`` when the depth is odd. ``rates``: see :func:`as_rates`.
    """
    def geometry(j):
        return effective_window(img_size, window_size, 0 if j % 2 == 0 else window_size // 2)

    if not scanned:
        for j in range(depth):
            window, shift = geometry(j)
            x = block(window_size=window, shift_size=shift, drop_path=rate_at(rates, j), name=f"blocks_{j}")(x)
        return x
    pairs = depth // 2
    if pairs:
        pair_rates = None if rates is None else rates[:2 * pairs].reshape(pairs, 2)
        x = scan(BlockPair(block, geometry(0), geometry(1), name="pairs"), x, pair_rates, length=pairs)
    if depth % 2:
        window, shift = geometry(depth - 1)
        x = block(window_size=window, shift_size=shift, drop_path=rate_at(rates, depth - 1), name="tail")(x)
    return x


def scanned_block_path(path: tuple[str, ...], depth: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Where :func:`alternating_blocks` keeps unrolled block ``blocks_{j}`` when scanned."""
    if path and path[0].startswith("blocks_") and path[0][len("blocks_"):].isdigit():
        j = int(path[0][len("blocks_"):])
        if j >= 2 * (depth // 2):
            return ("tail", *path[1:]), ()
        return ("pairs", "shifted" if j % 2 else "unshifted", *path[1:]), (j // 2,)
    return path, ()
