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

For a model outside the converter, ``--flax-class file.py:Class`` (built with the same kwargs, plus
``--flax-kwargs``) and ``--sequences`` (module names that are PyTorch ``Sequential``/``ModuleList``
containers) use the generic name/layout mapping of ``iln_jax.convert.mapping``.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from iln_jax import convert
from iln_jax.convert.mapping import _module_key


def import_object(spec: str, repo: Optional[str] = None):
    """``module.path:Name`` (importable from ``repo``) or ``path/to/file.py:Name``."""
    target, sep, name = spec.rpartition(":")
    if not sep:
        raise ValueError(f"{spec!r} is not 'module.path:Class' or 'file.py:Class'")
    if repo:
        repo = os.path.abspath(os.path.expanduser(repo))
        if not os.path.isdir(repo):
            raise FileNotFoundError(f"--torch-repo {repo} is not a folder")
        if repo not in sys.path:
            sys.path.insert(0, repo)
    if target.endswith(".py"):
        path = target if os.path.isabs(target) or not repo else os.path.join(repo, target)
        mod_spec = importlib.util.spec_from_file_location(f"_compare_{os.path.basename(path)[:-3]}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ImportError(f"Could not import {target!r} (from {repo or 'sys.path'}): {e}. Official HAT/DRCT "
                              f"import basicsr, which needs torchvision < 0.17 (BasicSR #533)") from e
    if not hasattr(module, name):
        raise AttributeError(f"{target} has no {name!r}")
    return getattr(module, name)


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


def generic_from_torch(module, state_dict: dict, sequences, sample_shape) -> dict:
    """Flax variables for ``module`` from a PyTorch state_dict by the generic naming rule (every
    variable must be present with its shape; extra keys such as buffers are ignored)."""
    flat, missing, bad = {}, [], []
    for leaf, shape in convert.template(module, sample_shape, sequences):
        if leaf.torch_key not in state_dict:
            missing.append(leaf.torch_key)
            continue
        value = np.asarray(state_dict[leaf.torch_key])
        if value.shape != leaf.torch_shape(shape):
            bad.append(f"{leaf.torch_key}: expected {leaf.torch_shape(shape)}, got {value.shape}")
            continue
        flat[(leaf.collection, *leaf.flax_path)] = jnp.asarray(leaf.from_torch(value), jnp.float32)
    if missing or bad:
        raise ValueError(f"state_dict does not fit {type(module).__name__}: missing {missing}, shapes {bad}")
    return flax.traverse_util.unflatten_dict(flat)


def run_comparison(torch_model, flax_module, variables: dict, x_nhwc: np.ndarray, sequences) -> dict:
    """Run both models on ``x_nhwc`` and compare every mapped module output and the final output."""
    import torch  # PyTorch is a dev/parity dependency: imported on use
    out_f, state = flax_module.apply(variables, jnp.asarray(x_nhwc), capture_intermediates=True,
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
    p.add_argument("--out", help="write the full report as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import torch  # PyTorch is a dev/parity dependency: imported on use
    args = parse_args(argv)
    if bool(args.arch) == bool(args.flax_class):
        raise SystemExit("give exactly one of --arch and --flax-class")
    kwargs, flax_extra = json.loads(args.kwargs), json.loads(args.flax_kwargs)
    torch_cls = import_object(args.torch_class, args.torch_repo)
    torch.manual_seed(args.seed)
    torch_model = torch_cls(**kwargs).eval()
    if args.pth:
        sd = convert.load_state_dict(args.pth, param_key=args.param_key)
        torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=True)
    sd = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    channels = args.in_chans or kwargs.get("in_chans", kwargs.get("inp_channels", 3))
    shape = (args.batch, args.size, args.size, channels)
    if args.arch:
        flax_module, variables = convert.from_torch(args.arch, sd, **kwargs, **flax_extra)
        sequences = convert.arch_spec(args.arch).sequences
    else:
        flax_module = import_object(args.flax_class)(**kwargs, **flax_extra)
        sequences = [s for s in args.sequences.split(",") if s]
        variables = generic_from_torch(flax_module, sd, sequences, shape)
    x = np.random.default_rng(args.seed).uniform(size=shape).astype(np.float32)
    report = run_comparison(torch_model, flax_module, variables, x, sequences)
    print(format_report(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
