"""The golden tensors produced by the official PyTorch models (tests/data), for the tests. Loading
and the comparisons live in ``iln_jax.parity.goldens`` (the accelerator benchmark runs them too)."""
import jax
import numpy as np

from iln_jax.parity import goldens
from iln_jax.parity.goldens import load, load_extra, load_padding, meta, nhwc, padding_names, relative_error  # noqa: F401

DATA = goldens.DATA_DIR
FORWARD_RTOL = goldens.FORWARD_TOL


def run(module, variables, x) -> np.ndarray:
    return np.asarray(jax.jit(module.apply)(variables, x))


def assert_matches(out, ref, what: str = "output") -> None:
    assert out.shape == ref.shape, f"{what}: shape {out.shape}, official {ref.shape}"
    err = relative_error(out, ref)
    assert err < FORWARD_RTOL, f"{what}: max |port - official| / max |official| = {err:.3g} >= {FORWARD_RTOL:g}"


def count_params(module, input_shape) -> int:
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, np.float32))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
