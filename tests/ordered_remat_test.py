"""ordered_remat: jax.checkpoint whose recomputation XLA:CPU cannot merge back into the forward pass."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.models import ordered_remat

_POLICIES = {"nothing": jax.checkpoint_policies.nothing_saveable,
             "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def _block(x, w):
    return jnp.tanh(jnp.tanh(x @ w) @ w.T) + x


def _chain(block):
    def loss(ws, x):
        for w in ws:
            x = block(x, w)
        return jnp.sum(x ** 2)
    return loss


def _inputs(n=8):
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal((64, 256)) * 0.1, jnp.float32) for _ in range(n)]
    return ws, jnp.asarray(rng.standard_normal((512, 64)), jnp.float32)


def _temp(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy", list(_POLICIES))
def test_gradients_equal_and_memory_is_saved(policy):
    ws, x = _inputs()
    plain = jax.grad(_chain(_block), argnums=(0, 1))
    ordered = jax.grad(_chain(ordered_remat.checkpoint_after_cotangent(_block, _POLICIES[policy])), argnums=(0, 1))
    for a, b in zip(jax.tree.leaves(jax.jit(ordered)(ws, x)), jax.tree.leaves(jax.jit(plain)(ws, x))):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 2e-6 * np.abs(b).max()  # float32 round-off of sums over 512 rows
    if policy == "nothing":
        assert _temp(ordered, ws, x) < _temp(plain, ws, x) / 2


def test_plain_checkpoint_is_undone_on_this_backend_and_ordered_is_not():
    # What the module works around: if XLA:CPU ever keeps the barriers, jax.checkpoint alone saves
    # memory too and ordered_remat can go.
    ws, x = _inputs()
    plain = _temp(jax.grad(_chain(_block)), ws, x)
    checkpointed = _temp(jax.grad(_chain(jax.checkpoint(_block))), ws, x)
    ordered = _temp(jax.grad(_chain(ordered_remat.checkpoint_after_cotangent(_block))), ws, x)
    if jax.default_backend() == "cpu":
        assert ordered < plain / 2 and ordered < checkpointed


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.Dense(32)(x)
        y = nn.Dropout(0.5, deterministic=False)(jnp.tanh(y))
        return x + nn.Dense(x.shape[-1])(y)


class _Stack(nn.Module):
    block: type

    @nn.compact
    def __call__(self, x):
        for i in range(3):
            x = self.block(name=f"block_{i}")(x)
        return x


def test_flax_module_matches_nn_remat_with_params_and_dropout():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 8)), jnp.float32)
    ref, ours = _Stack(nn.remat(_Block)), _Stack(ordered_remat.remat(_Block, jax.checkpoint_policies.nothing_saveable))
    params = ref.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)["params"]
    assert jax.tree.structure(ours.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)["params"]) \
        == jax.tree.structure(params)

    def loss(module):
        return lambda p: jnp.sum(module.apply({"params": p}, x, rngs={"dropout": jax.random.key(2)}) ** 2)

    np.testing.assert_array_equal(np.asarray(ours.apply({"params": params}, x, rngs={"dropout": jax.random.key(2)})),
                                  np.asarray(ref.apply({"params": params}, x, rngs={"dropout": jax.random.key(2)})))
    for a, b in zip(jax.tree.leaves(jax.jit(jax.grad(loss(ours)))(params)),
                    jax.tree.leaves(jax.jit(jax.grad(loss(ref)))(params))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
