"""Loading the golden tensors produced by the official PyTorch models (see tests/data)."""
import json
import pathlib

import jax
import numpy as np

DATA = pathlib.Path(__file__).parent / "data"


def load(name: str):
    """-> (state_dict, kwargs, input NHWC, output NHWC)."""
    npz = np.load(DATA / f"{name}.npz")
    meta = json.loads(bytes(npz["meta_json"]))
    sd = {k[3:]: npz[k] for k in npz.files if k.startswith("sd/")}
    return sd, meta["kwargs"], npz["input"].transpose(0, 2, 3, 1), npz["output"].transpose(0, 2, 3, 1)


def run(module, variables, x) -> np.ndarray:
    return np.asarray(jax.jit(module.apply)(variables, x))


def relative_error(out, ref) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def count_params(module, input_shape) -> int:
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, np.float32))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
