"""Helpers of the backbone tests. ``init_apply_jit``: the check every backbone x norm pair must pass
(init, a jitted forward, finite output of the right size for an input that is not a multiple of the
window: reflect pad, then crop). ``synthetic_variables``: variables for tests that need values but
not the initialiser's. ``each_norm_with``: the cases of a norm sweep over a second option.

``module.init`` runs eagerly on purpose: jitted, its per-parameter RNG ops dominate compile time,
while eager ops are compiled once per shape and reused by every norm of a sweep.
"""
import jax
import jax.numpy as jnp
import numpy as np

ODD_INPUT = (2, 9, 7, 3)
TRAIN_MODE_NORMS = ("batchnorm", "iln")  # the norms whose training forward differs (batch stats, rescale)


def each_norm_with(options: tuple) -> list[tuple]:
    """``(norm, option)`` for every built-in norm, the options taken in turn, so that every norm and
    every option is built (2-3 norms per option). The norm sits in the blocks, an upsampler / HINT
    mode / ExDA option in other parts of the network: their full cross product compiled 4x the
    programs to check no more pairs that meet (tests/README.md)."""
    from iln_jax.layers.norms import NORMS
    return [(norm, options[i % len(options)]) for i, norm in enumerate(NORMS)]


def init_apply_jit(module, *, train: bool = False, input_shape=ODD_INPUT):
    """-> (output, mutated collections) of a freshly initialised module's jitted forward."""
    x = jnp.asarray(np.random.default_rng(0).uniform(size=input_shape), jnp.float32)
    key = jax.random.key(0)
    variables = module.init(key, x)
    forward = jax.jit(lambda v, x: module.apply(v, x, train=train, rngs={"dropout": key}, mutable=["batch_stats"]))
    out, updates = forward(variables, x)
    b, h, w, c = input_shape
    assert out.shape == (b, h * module.scale, w * module.scale, c)
    assert np.isfinite(np.asarray(out)).all()
    if "batch_stats" in variables:
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), variables["batch_stats"], updates["batch_stats"])
        assert all(jax.tree.leaves(changed)) == train
    return out, updates


def synthetic_variables(module, x, seed=0):
    """Variables with the shapes ``module.init`` gives (traced, not compiled: compiling every
    parameter's initializer dominates a tiny model's compile time), random values from numpy."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = path[-1].key
        if path[0].key == "batch_stats":
            return np.full(leaf.shape, 1.0 if name == "var" else 0.0, np.float32)
        return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(value, shapes)
