"""Loading the golden tensors produced by the official PyTorch models (see tests/data); the
comparisons themselves live in ``iln_jax.parity.goldens`` (the accelerator benchmark runs them too)."""
import jax
import numpy as np

from iln_jax.parity import goldens

DATA = goldens.DATA_DIR


def load(name: str):
    """-> (state_dict, kwargs, input NHWC, output NHWC)."""
    return goldens.load(name, DATA)


def run(module, variables, x) -> np.ndarray:
    return np.asarray(jax.jit(module.apply)(variables, x))


relative_error = goldens.relative_error


def count_params(module, input_shape) -> int:
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, np.float32))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
