"""Loading the golden tensors produced by the official PyTorch models (see tests/data).

Model goldens: ``data/<name>.npz`` (weights, input, official output) and
``data/golden_grad/<name>_grad.npz`` (gradient, two Adam steps, EMA). Padding goldens:
``data/padding/<name>.npz`` (the weights of a model golden, an input that is not a multiple of the
window, and the official output through the official padding path). The shared ones come from
``../shared/golden*``; the rest were made by ``scripts/make_goldens.py`` (data/golden_grad/README.md).
"""
import json
import pathlib

import jax
import numpy as np

DATA = pathlib.Path(__file__).parent / "data"
# Forward parity: the largest |port - official| over the largest |official|. A float32 port reaches
# 2e-7..1.4e-6 on every golden (measured); 1e-5 leaves room for other CPUs' summation orders and
# is still far below what a wrong eps, a swapped head or a wrong padding mode changes.
FORWARD_RTOL = 1e-5


def meta(name: str, folder: str = "") -> dict:
    return json.loads(bytes(np.load(DATA / folder / f"{name}.npz")["meta_json"]))


def load(name: str):
    """-> (state_dict, kwargs, input NHWC, output NHWC). ``kwargs`` are the official constructor's,
    plus the port's own options the golden was made for (``port_kwargs``, e.g. HINT's ``faithful``)."""
    npz = np.load(DATA / f"{name}.npz")
    info = json.loads(bytes(npz["meta_json"]))
    sd = {k[3:]: npz[k] for k in npz.files if k.startswith("sd/")}
    kwargs = {**info["kwargs"], **info.get("port_kwargs", {})}
    return sd, kwargs, nhwc(npz["input"]), nhwc(npz["output"])


def load_extra(name: str, key: str) -> np.ndarray:
    """Another array of a model golden (HINT's ``input2``, ``output2``, ``cache``, ``cache2``)."""
    value = np.load(DATA / f"{name}.npz")[key]
    return nhwc(value) if value.ndim == 4 else value


def load_padding(name: str):
    """-> (state_dict, kwargs with the port's ``padding``, input NHWC, official output NHWC)."""
    npz = np.load(DATA / "padding" / f"{name}.npz")
    info = json.loads(bytes(npz["meta_json"]))
    sd, kwargs, _, _ = load(info["weights_from"])
    return sd, {**kwargs, "padding": info["padding"]}, nhwc(npz["input"]), nhwc(npz["output"])


def padding_names() -> list[str]:
    return sorted(p.stem for p in (DATA / "padding").glob("*.npz"))


def nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1)


def run(module, variables, x) -> np.ndarray:
    return np.asarray(jax.jit(module.apply)(variables, x))


def relative_error(out, ref) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def assert_matches(out, ref, what: str = "output") -> None:
    assert out.shape == ref.shape, f"{what}: shape {out.shape}, official {ref.shape}"
    err = relative_error(out, ref)
    assert err < FORWARD_RTOL, f"{what}: max|port - official| / max|official| = {err:.3g} (>= {FORWARD_RTOL:g})"


def count_params(module, input_shape) -> int:
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, np.float32))
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
