"""Make the golden tensors of ``tests/data`` that this repository generated itself, from the official code.

    python3 scripts/make_goldens.py --official hint=PATH --official restormer=PATH \\
        --official swinir=PATH --official hat=PATH --official drct=PATH [--only NAME ...]

``PATH`` is the root of a checkout of the official repository (``PATH@COMMIT`` records the commit of
an exported tree without ``.git``): joshyZhou/HINT, swz30/Restormer, JingyunLiang/SwinIR,
XPixelGroup/HAT, ming053l/DRCT. Nothing of the official code is copied into this repository; the
official modules are imported from the checkout (``scripts/golden_official.py``) and run as they are.

Two kinds of golden (README in ``tests/data/golden_grad``):

* model goldens (``tests/data/<name>.npz`` and ``tests/data/golden_grad/<name>_grad.npz``): a tiny
  official model, perturbed weights, its forward, and the gradient / two Adam steps / EMA of
  ``scripts/golden_recipe.py`` (the recipe of the shared goldens);
* padding goldens (``tests/data/padding/<name>.npz``): the weights of an existing model golden, an
  input whose size is not a multiple of the window, and the official output through the official
  padding path (SwinIR's ``check_image_size`` inside its forward, HAT/DRCT's model wrappers'
  ``pre_process``/``post_process``, or the SwinIR/DRCT test scripts' mirror padding).

``--recheck NAME`` reruns the recipe on a model golden already in ``tests/data`` (its stored weights
and input) and prints how far the stored files are from this run: the check that this script
follows the recipe that made the shared goldens.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import types

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import golden_hint_corrected  # noqa: E402
import golden_official  # noqa: E402
import golden_recipe  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
CLASSES = {"hint": "HINT", "restormer": "Restormer", "swinir": "SwinIR", "hat": "HAT", "drct": "DRCT"}

# HINT's smallest official layout: width 4 still gives every attention level a multiple of 8 channels
# (32/16/8/8/8), the 1:2:2:3 groups are 1/2/2/3 channels at the last levels. heads as the released ymls.
HINT_TINY = dict(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[8, 8, 8, 8])
# 16x24: not square, and the latent (1/8) keeps 2x3 positions for HMHA's channel correlations.
UNET_INPUT = (2, 3, 16, 24)
MODEL_GOLDENS = {
    "hint_faithful": dict(arch="hint", kwargs=HINT_TINY, port_kwargs={"faithful": True}, seed=0,
                          note="official HINT; forward = the first call after construction (no cache), "
                               "input2/output2 = the next call, which carries the first call's cache"),
    "hint_corrected": dict(arch="hint", kwargs=HINT_TINY, port_kwargs={"faithful": False}, seed=0, corrected=True,
                           note="NOT official output: the official HINT modules with the corrected HMHA "
                                "(scripts/golden_hint_corrected.py), as iln_jax's faithful=False"),
    "restormer_biasfree": dict(arch="restormer", seed=1, note="official Restormer, BiasFree LayerNorm (the "
                               "Gaussian-denoising layout), ExDA options off (ExDA has no official code)",
                               kwargs=dict(dim=4, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                                           heads=[1, 2, 4, 8], LayerNorm_type="BiasFree")),
}
# port padding "reflect" = the official forward / model wrappers; "symmetric" = the official test scripts.
PADDING_GOLDENS = {
    "swinir_sr_x2_reflect_odd": dict(base="swinir_sr_x2_pixelshuffle", path="forward", padding="reflect",
                                     input=(2, 3, 21, 11)),
    "swinir_sr_x2_script_pad": dict(base="swinir_sr_x2_pixelshuffle", path="test_script", padding="symmetric",
                                    input=(1, 3, 16, 13)),
    "hat_sr_x2_reflect_odd": dict(base="hat_sr_x2", path="wrapper", padding="reflect", input=(2, 3, 21, 11)),
    "drct_sr_x2_reflect_odd": dict(base="drct_sr_x2", path="wrapper", padding="reflect", input=(2, 3, 21, 11)),
    "drct_sr_x2_script_pad": dict(base="drct_sr_x2", path="test_script", padding="symmetric", input=(1, 3, 16, 13)),
}
PATH_NOTES = {
    "forward": "SwinIR.forward pads by itself (check_image_size: reflect, bottom/right, only if needed) and crops",
    "wrapper": "{cls}Model.pre_process (reflect, bottom/right, only if needed), the network, "
               "{cls}Model.post_process (crop), the official methods called on a stand-in object",
    "test_script": "the test script's mirror padding (always by (h // ws + 1) * ws - h, edge pixel repeated: "
                   "main_test_swinir.py / DRCT inference.py), re-expressed here, then the network and the crop",
}


def _uint8_json(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _official_info(arch: str, checkouts: dict) -> dict:
    path, commit = checkouts[arch]
    return {"torch": torch.__version__, "official_repo": golden_official.REPOS[arch],
            "official_commit": commit or golden_official.commit_of(path),
            "official_file": golden_official.ARCH_FILES[arch]}


def _build(arch: str, kwargs: dict, checkouts: dict, seed: int):
    module = golden_official.load_arch(arch, checkouts[arch][0])
    torch.manual_seed(seed)
    model = getattr(module, CLASSES[arch])(**kwargs).eval()
    return module, model


def _reset_hint_cache(model):
    model.qv_cache = None  # the official model keeps its last cache across calls


def make_model_golden(name: str, spec: dict, checkouts: dict, out: pathlib.Path) -> list[pathlib.Path]:
    arch = spec["arch"]
    module, model = _build(arch, spec["kwargs"], checkouts, spec["seed"])
    if spec.get("corrected"):
        assert golden_hint_corrected.install(model, module.Attention) > 0
    golden_recipe.perturb_(model, spec["seed"])
    before = _reset_hint_cache if arch == "hint" else None
    rng = np.random.RandomState(spec["seed"] + 1)
    x = rng.uniform(size=UNET_INPUT).astype(np.float32)
    output = golden_recipe.forward(model, x, before)
    extra = {}
    if spec.get("port_kwargs", {}).get("faithful"):  # the official model's state carried into a second call
        extra["cache"] = model.qv_cache.numpy()
        extra["input2"] = rng.uniform(size=UNET_INPUT).astype(np.float32)
        extra["output2"] = golden_recipe.forward(model, extra["input2"])
        extra["cache2"] = model.qv_cache.numpy()
    sd = golden_recipe.numpy_state_dict(model)
    target = golden_recipe.make_target(output)
    start = {k: v.copy() for k, v in sd.items()}
    result = golden_recipe.train(model, x, target, before)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    distance = golden_recipe.float64_distance(model, x, output, target, result, before)
    info = _official_info(arch, checkouts)
    meta = {"arch": CLASSES[arch], "kwargs": spec["kwargs"], "port_kwargs": spec.get("port_kwargs", {}),
            "note": spec["note"], "input_layout": "NCHW float32", "output_layout": "NCHW float32",
            "made_by": "scripts/make_goldens.py", "seed": spec["seed"], **info}
    forward_file = out / f"{name}.npz"
    np.savez_compressed(forward_file, input=x, output=output, meta_json=_uint8_json(meta),
                        **{f"sd/{k}": v for k, v in sd.items()}, **extra)
    residual = np.abs(output - target)
    grad_meta = {"loss": "l1_mean", "target": "output + 0.1 * N(0,1), numpy.random.RandomState(0)."
                 "standard_normal(output.shape) as float32",
                 "optimizer": {"name": "adam", **golden_recipe.ADAM, "impl": "torch.optim.Adam defaults"},
                 "ema_decay": golden_recipe.EMA_DECAY, "steps": 2, "mode": "eval (drop-path and dropout off)",
                 "min_abs_residual": float(residual.min()), "params_without_grad": result["params_without_grad"],
                 "n_param_elements": int(sum(v.size for v in result["grad"].values())),
                 "float32_vs_float64": distance, **info}
    if arch == "hint":
        grad_meta["hint_cache"] = "reset to None before every forward: each step is the official first call"
    grad_file = out / "golden_grad" / f"{name}_grad.npz"
    np.savez_compressed(grad_file, target=target, loss=np.float32(result["loss"]), loss2=np.float32(result["loss2"]),
                        grad_meta_json=_uint8_json(grad_meta),
                        **{f"{part}/{k}": v for part in ("grad", "step1", "step2", "ema2")
                           for k, v in result[part].items()})
    print(f"{name}: float32 vs float64 {json.dumps(distance)}")
    return [forward_file, grad_file]


def mirror_pad(x: torch.Tensor, window: int) -> torch.Tensor:
    """The test scripts' padding: always to the next multiple strictly above, mirroring with the edge."""
    h, w = x.shape[2:]
    x = torch.cat((x, x.flip(2)), dim=2)[:, :, : (h // window + 1) * window]
    return torch.cat((x, x.flip(3)), dim=3)[:, :, :, : (w // window + 1) * window]


def _load_base(name: str):
    npz = np.load(DATA / f"{name}.npz")
    meta = json.loads(bytes(npz["meta_json"]))
    return {k[3:]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("sd/")}, meta


def make_padding_golden(name: str, spec: dict, checkouts: dict, out: pathlib.Path) -> list[pathlib.Path]:
    sd, base_meta = _load_base(spec["base"])
    arch = next(a for a, cls in CLASSES.items() if cls == base_meta["arch"])
    kwargs = base_meta["kwargs"]
    _, model = _build(arch, kwargs, checkouts, 0)
    model.load_state_dict(sd, strict=True)
    x = torch.from_numpy(np.random.RandomState(7).uniform(size=spec["input"]).astype(np.float32))
    scale = kwargs["upscale"] if kwargs.get("upsampler") else 1
    with torch.no_grad():
        if spec["path"] == "forward":
            output = model(x)
        elif spec["path"] == "test_script":
            h, w = x.shape[2:]
            output = model(mirror_pad(x, kwargs["window_size"]))[:, :, : h * scale, : w * scale]
        else:
            wrapper = getattr(golden_official.load_model_wrapper(arch, checkouts[arch][0]), f"{CLASSES[arch]}Model")
            stand_in = types.SimpleNamespace(opt={"network_g": {"window_size": kwargs["window_size"]}, "scale": scale},
                                             lq=x)
            wrapper.pre_process(stand_in)
            stand_in.output = model(stand_in.img)
            wrapper.post_process(stand_in)
            output = stand_in.output
    meta = {"arch": base_meta["arch"], "kwargs": kwargs, "weights_from": spec["base"], "padding": spec["padding"],
            "official_path": PATH_NOTES[spec["path"]].format(cls=CLASSES[arch]), "input_layout": "NCHW float32",
            "output_layout": "NCHW float32", "made_by": "scripts/make_goldens.py", **_official_info(arch, checkouts)}
    if spec["path"] == "wrapper":
        meta["official_wrapper_file"] = golden_official.MODEL_FILES[arch]
    path = out / "padding" / f"{name}.npz"
    np.savez_compressed(path, input=x.numpy(), output=output.numpy(), meta_json=_uint8_json(meta))
    return [path]


def recheck(name: str, checkouts: dict) -> None:
    """Rerun the recipe on a stored model golden; print the largest differences from its files."""
    sd, meta = _load_base(name)
    arch = next(a for a, cls in CLASSES.items() if cls == meta["arch"])
    _, model = _build(arch, meta["kwargs"], checkouts, 0)
    model.load_state_dict(sd, strict=True)
    fwd, grad = np.load(DATA / f"{name}.npz"), np.load(DATA / "golden_grad" / f"{name}_grad.npz")
    output = golden_recipe.forward(model, fwd["input"])
    target = golden_recipe.make_target(output)
    result = golden_recipe.train(model, fwd["input"], target)
    report = {"output": float(np.abs(output - fwd["output"]).max()), "target": float(np.abs(target - grad["target"]).max()),
              "loss": abs(result["loss"] - float(grad["loss"])), "loss2": abs(result["loss2"] - float(grad["loss2"]))}
    for part in ("grad", "step1", "step2", "ema2"):
        report[part] = max(float(np.abs(v - grad[f"{part}/{k}"]).max()) for k, v in result[part].items())
    print(f"{name}: max |this run - stored| {json.dumps(report)}")


def _checkouts(values: list[str]) -> dict:
    checkouts = {}
    for value in values:
        arch, sep, path = value.partition("=")
        if not sep or arch not in CLASSES:
            raise SystemExit(f"error: --official {value!r}: expected ARCH=PATH[@COMMIT] with ARCH one of {sorted(CLASSES)}")
        path, _, commit = path.partition("@")
        checkouts[arch] = (pathlib.Path(path), commit or None)
    return checkouts


def _needed_arch(name: str) -> str:
    if name in MODEL_GOLDENS:
        return MODEL_GOLDENS[name]["arch"]
    base = PADDING_GOLDENS[name]["base"] if name in PADDING_GOLDENS else name
    return next(a for a in CLASSES if base.startswith(a))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", action="append", default=[], metavar="ARCH=PATH[@COMMIT]")
    p.add_argument("--only", nargs="+", metavar="NAME", help="default: every golden this script makes")
    p.add_argument("--recheck", nargs="+", metavar="NAME", default=[], help="model goldens already in tests/data")
    p.add_argument("--out", type=pathlib.Path, default=DATA)
    a = p.parse_args(argv)
    checkouts = _checkouts(a.official)
    known = {**MODEL_GOLDENS, **PADDING_GOLDENS}
    names = a.only if a.only is not None else ([] if a.recheck else list(known))
    for name in [*names, *a.recheck]:
        if name not in known and name not in a.recheck:
            raise SystemExit(f"error: unknown golden {name!r}; valid: {', '.join(known)}")
        if name in a.recheck and not (DATA / f"{name}.npz").is_file():
            raise SystemExit(f"error: --recheck {name!r}: {DATA / (name + '.npz')} does not exist")
        arch = _needed_arch(name)
        if arch not in checkouts:
            raise SystemExit(f"error: {name} needs the official {golden_official.REPOS[arch]}: pass --official {arch}=PATH")
    torch.set_num_threads(1)  # deterministic reductions from run to run
    for name in a.recheck:
        recheck(name, checkouts)
    for name in names:
        (a.out / "golden_grad").mkdir(parents=True, exist_ok=True)
        (a.out / "padding").mkdir(parents=True, exist_ok=True)
        make = make_model_golden if name in MODEL_GOLDENS else make_padding_golden
        for path in make(name, known[name], checkouts, a.out):
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
