"""Compare an official PyTorch model with its iln_jax port, block by block, on the same weights and input.

    python -m iln_jax.compare --torch-repo ~/src/SwinIR --torch-class models.network_swinir:SwinIR \\
        --arch swinir --kwargs '{"upscale": 2, "img_size": 64, "window_size": 8, "embed_dim": 60,
        "depths": [6, 6, 6, 6], "num_heads": [6, 6, 6, 6], "mlp_ratio": 2, "upsampler": "pixelshuffledirect"}' \\
        [--pth 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x2.pth] [--size 48] [--out report.json]

The official class is imported from the user's checkout (``--torch-repo`` is put on ``sys.path``;
``--torch-class`` is ``module.path:Class`` or ``file.py:Class``) and built with ``--kwargs``; its
weights (random, seeded, or ``--pth``) are converted with ``iln_jax.convert.from_torch(--arch)``.
Both run on the same random input. Every Flax module output (``capture_intermediates``) whose
name maps to a PyTorch module -- Flax ``layers_0/residual_group/blocks_1`` is PyTorch
``layers.0.residual_group.blocks.1``, the converter's naming rule -- is compared with that module's
forward-hook output after a layout change (NCHW -> NHWC for 4-D tensors, tokens (B, L, C) -> (B, H, W, C)).
Reported per module: max |a - b| and that over max |torch output| ("relative"), and the same for the output.

Both run at full float32 precision (``iln_jax.parity.full_precision``: no TF32 or bfloat16-pass matmuls
on a GPU/TPU, where JAX's default would leave ~1e-3 relative differences); ``--precision default``
compares the frameworks' defaults instead.

For a model outside the converter, ``--flax-class file.py:Class`` (built with the same kwargs, plus
``--flax-kwargs``) and ``--sequences`` (module names that are PyTorch ``Sequential``/``ModuleList``
containers) use the generic name/layout mapping of ``iln_jax.convert.mapping``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from typing import Optional

import flax
import jax
import numpy as np

from iln_jax import parity
from iln_jax.compare.pair import CompareError, build_pair, in_channels
from iln_jax.convert.mapping import _module_key


def parse_json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompareError(f"{flag}: not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise CompareError(f"{flag}: expected a JSON object of constructor arguments, got {text!r}")
    return value


def flax_to_torch_name(path: tuple[str, ...], sequences) -> str:
    """Flax module path -> PyTorch module name (``blocks_1`` -> ``blocks.1`` for containers)."""
    return ".".join(_module_key(tuple(path), frozenset(sequences)))


def to_flax_layout(t: np.ndarray, flax_shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """A PyTorch tensor in the Flax layout of ``flax_shape``, or None when no rule fits."""
    flax_shape = tuple(flax_shape)
    if t.ndim == 4:
        nhwc = t.transpose(0, 2, 3, 1)
        if nhwc.shape == flax_shape:
            return nhwc
    if t.ndim == 3 and len(flax_shape) == 4 and t.shape[0] == flax_shape[0] and t.size == int(np.prod(flax_shape)) \
            and t.shape[-1] == flax_shape[-1]:
        return t.reshape(flax_shape)
    if t.shape == flax_shape:
        return t
    return None


def _first_array(output) -> Optional[np.ndarray]:
    for leaf in jax.tree.leaves(output):
        if hasattr(leaf, "shape"):
            return np.asarray(leaf)
    return None


def _torch_first(output):
    import torch  # PyTorch is a dev/parity dependency: imported on use
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for o in output:
            t = _torch_first(o)
            if t is not None:
                return t
    if isinstance(output, dict):
        for o in output.values():
            t = _torch_first(o)
            if t is not None:
                return t
    return None


def run_comparison(torch_model, flax_module, variables: dict, x_nhwc: np.ndarray, sequences) -> dict:
    """Run both models on ``x_nhwc`` and compare every mapped module output and the final output."""
    import torch  # PyTorch is a dev/parity dependency: imported on use
    out_f, state = flax_module.apply(variables, jax.device_put(x_nhwc), capture_intermediates=True,
                                     mutable=["intermediates"])
    flat = flax.traverse_util.flatten_dict(state["intermediates"])
    flax_outputs = {}
    for path, value in flat.items():
        if path[-1] != "__call__" or len(path) < 2:
            continue
        flax_outputs[path[:-1]] = (len(value), _first_array(value[0]))
    named = dict(torch_model.named_modules())
    wanted = {flax_to_torch_name(p, sequences): p for p in flax_outputs}
    captured, calls, handles = {}, {}, []

    def hook(name):
        def fn(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in captured:
                t = _torch_first(output)
                if t is not None:
                    captured[name] = t.detach().double().cpu().numpy()
        return fn

    for name in wanted:
        if name in named:
            handles.append(named[name].register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            out_t = _torch_first(torch_model(torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))))
    finally:
        for h in handles:
            h.remove()
    rows, unmatched = [], []
    for name, path in wanted.items():
        if name not in captured:
            continue
        n_flax, f = flax_outputs[path]
        t = to_flax_layout(captured[name], f.shape)
        if t is None:
            unmatched.append(f"{name}: torch {captured[name].shape} vs flax {tuple(f.shape)}")
            continue
        rows.append(_diff_row(name, "/".join(path), np.asarray(f, np.float64), t,
                              note="" if n_flax == calls.get(name, 0) else f"calls flax {n_flax} / torch {calls.get(name)}"))
    output = _diff_row("(output)", "(output)", np.asarray(out_f, np.float64),
                       out_t.detach().double().numpy().transpose(0, 2, 3, 1), note="")
    not_in_torch = sorted(n for n in wanted if n not in named)
    return {"modules": rows, "output": output, "unmatched_layouts": unmatched,
            "flax_modules_without_torch_counterpart": not_in_torch, "input_shape": list(x_nhwc.shape)}


def _diff_row(torch_name: str, flax_name: str, f: np.ndarray, t: np.ndarray, note: str) -> dict:
    diff = np.abs(f - t)
    scale = np.abs(t).max()
    return {"torch": torch_name, "flax": flax_name, "shape": list(f.shape), "max_abs": float(diff.max()),
            "max_rel": float(diff.max() / scale) if scale > 0 else float(diff.max()),
            "max_abs_torch": float(scale), "note": note}


def format_report(report: dict, limit: Optional[int] = None) -> str:
    rows = report["modules"][:limit] if limit else report["modules"]
    width = max([len(r["torch"]) for r in rows] + [10])
    lines = [f"{'module (torch name)':<{width}}  {'shape':<20} {'max abs':>10} {'max rel':>10}  note"]
    for r in rows + [report["output"]]:
        lines.append(f"{r['torch']:<{width}}  {str(tuple(r['shape'])):<20} {r['max_abs']:>10.2e} "
                     f"{r['max_rel']:>10.2e}  {r['note']}")
    worst = max(rows, key=lambda r: r["max_rel"], default=None)
    lines.append(f"{len(rows)} modules compared; output max abs {report['output']['max_abs']:.2e}, "
                 f"relative {report['output']['max_rel']:.2e}"
                 + (f"; worst module {worst['torch']} ({worst['max_rel']:.2e})" if worst else ""))
    if report["unmatched_layouts"]:
        lines.append("layouts not matched (not compared): " + "; ".join(report["unmatched_layouts"][:10]))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--torch-repo", help="the official repository checkout (put on sys.path)")
    p.add_argument("--torch-class", required=True, help="module.path:Class or file.py:Class")
    p.add_argument("--kwargs", default="{}", help="JSON constructor arguments (both models)")
    p.add_argument("--flax-kwargs", default="{}", help="JSON extra arguments for the Flax model only (e.g. padding)")
    p.add_argument("--arch", help="iln_jax.convert arch name (swinir, hat, hat_iln, drct, restormer, hint)")
    p.add_argument("--flax-class", help="file.py:Class or module:Class, instead of --arch (generic mapping)")
    p.add_argument("--sequences", default="", help="with --flax-class: comma-separated container names")
    p.add_argument("--pth", help="official weights (default: the PyTorch model's seeded random init)")
    p.add_argument("--param-key", help="state_dict entry of --pth (params / params_ema)")
    p.add_argument("--size", type=int, default=32, help="input height = width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--in-chans", type=int, help="input channels (default: kwargs in_chans / inp_channels, else 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("highest", "default"), default="highest",
                   help="float32 matmuls and convolutions at full precision in both frameworks (highest, the parity "
                        "setting) or at each framework's default (TF32 in JAX on Ampere+ GPUs)")
    p.add_argument("--out", help="write the full report as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    kwargs, flax_extra = parse_json(args.kwargs, "--kwargs"), parse_json(args.flax_kwargs, "--flax-kwargs")
    shape = (args.batch, args.size, args.size, in_channels(kwargs, args.in_chans))
    pair = build_pair(torch_class=args.torch_class, torch_repo=args.torch_repo, kwargs=kwargs, flax_kwargs=flax_extra,
                      arch=args.arch, flax_class=args.flax_class,
                      sequences=[s for s in args.sequences.split(",") if s], sample_shape=shape, seed=args.seed,
                      pth=args.pth, param_key=args.param_key)
    x = np.random.default_rng(args.seed).uniform(size=shape).astype(np.float32)
    with parity.full_precision() if args.precision == "highest" else contextlib.nullcontext():
        report = run_comparison(pair.torch_model.eval(), pair.flax_module, pair.variables, x, pair.sequences)
        report["precision"] = parity.precision_settings()
    print(format_report(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report
