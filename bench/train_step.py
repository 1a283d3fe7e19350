"""Benchmark the JAX train step (and, optionally, the official PyTorch model's) for a config.

    python bench/train_step.py --config configs/swinir.py:task=sr,scale=4 --batch 4 --patch 48 \
        --torch-ref ~/src/SwinIR --json swinir.json
    python bench/train_step.py --config configs/hat.py:variant=hat,scale=4 --batch 4 --patch 64 \
        --torch-ref ~/src/HAT,~/src/i-LN --model-kwargs '{"remat_policy": "dots_no_batch_and_convs"}' --sequential
    python bench/train_step.py --config configs/hat_mini_iln.py:scale=2 --norms iln,layernorm \
        --torch-ref ~/src/i-LN/iLN --json bench.json

For every norm in ``--norms`` it builds the config's model with that norm, compiles the full
train step (forward, L1, backward, Adam, EMA; the same function ``train.py`` runs, data-parallel
over all local devices in ``--parallel`` mode) and reports compile time, ms/step, steps/s and
patches/s, plus the step-time overhead of each norm relative to LayerNorm (i-LN vs LN).

``--torch-ref PATH[,PATH...]`` points at checkouts of the official PyTorch repositories (SwinIR, HAT,
DRCT, i-LN; never part of this project); each norm's official class is looked for in each of them
(HAT's LayerNorm model in the HAT repository, its i-LN model in the i-LN one). The official model is built with the same constructor
arguments, loaded with the converted weights (``iln_jax.convert.to_torch``, strict) and its
train step (Adam + EMA, the BasicSR loop) is timed in the same run on the same batch; the
forward outputs of both are compared as a check that the two are the same network. Only norms
the official code has are timed there (LayerNorm everywhere, i-LN for HAT via the i-LN repo).
Runs on CPU or GPU (both frameworks use the default accelerator; the device is recorded).

``--model-kwargs`` overrides model arguments (``scan_layers``, ``remat_policy``, ``attention_impl``);
``--xla-tuning both`` times each configuration with and without ``iln_jax.xla_options.tuned()``
(before/after the per-backend tuning, in one run); ``--conv both`` likewise times the
convolutions' per-backend formulations (``iln_jax/layers/conv.py``) against XLA's own (the model
argument ``conv_impl``: ``auto`` and ``xla``). XLA's planned memory of the compiled step (temp,
arguments, outputs) is reported with every timing. ``--parts`` adds the forward alone (the training
loss, no gradients) and the loss with its gradients (no optimizer) as their own rows, JAX and
PyTorch, so that a gap can be placed in the forward, the backward or the update.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iln_jax import host_memory  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import flops  # noqa: E402

# Official model class per (arch, norm): candidate files inside the reference checkout.
TORCH_MODELS = {
    ("swinir", "layernorm"): [("models/network_swinir.py", "SwinIR")],
    ("hat", "layernorm"): [("hat/archs/hat_arch.py", "HAT"), ("basicsr/archs/hat_arch.py", "HAT"),
                           ("iLN/basicsr/archs/hat_arch.py", "HAT")],
    ("hat", "iln"): [("basicsr/archs/hat_iLN_arch.py", "HAT_iLN"), ("iLN/basicsr/archs/hat_iLN_arch.py", "HAT_iLN")],
    ("drct", "layernorm"): [("drct/archs/DRCT_arch.py", "DRCT")],
}
CONVERT_ARCH = {("hat", "iln"): "hat_iln"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/default.py", help="config file[:args], as train.py")
    p.add_argument("--batch", type=int, default=None, help="global batch (default: the config's)")
    p.add_argument("--patch", type=int, default=None, help="LR patch size (default: the config's)")
    p.add_argument("--norms", default="iln,layernorm", help="comma-separated norms to time")
    p.add_argument("--compute-dtypes", default="float32",
                   help="comma-separated train.compute_dtype values to time (float32, bfloat16)")
    p.add_argument("--parallel", default=None, choices=("mesh", "pmap"), help="default: the config's")
    p.add_argument("--model-kwargs", default="{}", help="JSON of model arguments to override, e.g. "
                   '\'{"scan_layers": true, "remat_policy": "dots"}\'')
    p.add_argument("--xla-tuning", default="on", choices=("on", "off", "both"),
                   help="compile with iln_jax.xla_options.tuned() (on), without (off), or time both")
    p.add_argument("--conv", default=None, choices=("auto", "xla", "both"),
                   help="the model's conv_impl: convolutions as iln_jax.layers.conv formulates them per backend "
                        "(auto), as XLA's own everywhere (xla), or time both (default: --model-kwargs' "
                        "conv_impl, else auto)")
    p.add_argument("--parts", action="store_true",
                   help="also time the forward alone (the loss, no gradients) and the loss with its gradients "
                        "(no optimizer), JAX and PyTorch, to show which part of the step a gap is in")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3,
                   help="timing rounds, interleaved over every configuration (JAX and PyTorch); the table "
                        "gives the median round and the fastest")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
    p.add_argument("--torch-ref", default=None, help="checkout(s) of the official PyTorch repositories, comma-separated")
    p.add_argument("--sequential", action="store_true",
                   help="time every JAX round of a norm, free its program and buffers, then time PyTorch's rounds, "
                        "instead of interleaving them: for models whose two steps do not fit in host memory together "
                        "(HAT x4 at 4 x 64^2 on a 24 GiB machine; PyTorch's step alone peaks at 22.5 GiB)")
    p.add_argument("--host-malloc", default="auto", choices=host_memory.POLICIES,
                   help="iln_jax.host_memory policy for this process (JAX and PyTorch alike; default auto)")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args(argv)


def _config(spec: str, norm: str, batch, patch, parallel, model_kwargs=None):
    from iln_jax.train import load_config
    path, _, arg = spec.partition(":")
    c = load_config(str(ROOT / path) + (f":{arg}" if arg else ""), lock=False)
    c.model.norm = norm
    for key, value in (model_kwargs or {}).items():
        c.model.kwargs[key] = value
    if "stdnorm" in c.model.kwargs:
        c.model.kwargs.stdnorm = norm == "iln"
    if batch:
        c.data.batch_size = batch
    if patch:
        c.data.patch_size = patch
    if parallel:
        c.train.parallel = parallel
    return c


def _batch(c, channels: int, seed=0):
    rng = np.random.default_rng(seed)
    b, p, s, ch = c.data.batch_size, c.data.patch_size, max(1, c.data.scale), channels
    return {"lq": rng.random((b, p, p, ch), np.float32), "gt": rng.random((b, p * s, p * s, ch), np.float32)}


def device_peak_bytes():
    """JAX's peak bytes in use on its first local device since the process started (None where the
    backend keeps no statistics, e.g. the CPU)."""
    import jax
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    return (stats or {}).get("peak_bytes_in_use")


def _memory(compiled) -> dict:
    m = compiled.memory_analysis()
    gib = 2.0 ** 30
    return dict(temp_gib=m.temp_size_in_bytes / gib, argument_gib=m.argument_size_in_bytes / gib,
                output_gib=m.output_size_in_bytes / gib, alias_gib=m.alias_size_in_bytes / gib)


def time_jax(c, steps: int, warmup: int, *, tuning: bool = True, parts: bool = False) -> dict:
    """Compile and time the train step of config ``c``; with ``tuning`` False, without the
    per-backend XLA options (``iln_jax.xla_options.tuned``). The convolutions are formulated as the
    model's ``conv_impl`` says (``c.model.kwargs.conv_impl``, default auto). With ``parts``,
    ``out["_parts"]`` holds the results of the forward alone and of the loss with its gradients
    (see :func:`_time_jax_parts`)."""
    out = _time_jax(c, steps, warmup, tuning=tuning)
    if parts:
        out["_parts"] = _time_jax_parts(c, out, steps, warmup, tuning=tuning)
    from iln_jax.layers.conv import CONV_ENV
    conv = os.environ.get(CONV_ENV) or out["_model"].conv_impl  # the environment overrides the model
    for r in [out, *out.get("_parts", [])]:
        if conv != "auto":
            r["impl"] += f" {conv}-conv"
        r["conv"] = conv
    return out


def _time_jax(c, steps: int, warmup: int, *, tuning: bool) -> dict:
    import jax
    from iln_jax import xla_options
    from iln_jax.train import DataParallel, build_model, make_step
    from iln_jax.train.state import param_count
    from iln_jax.train.step_factory import model_in_channels

    dp = DataParallel(c.train.parallel)
    dp.check_batch_size(c.data.batch_size)
    model = build_model(c)
    init_state, fn = make_step(c, model, dp)  # the step train.py runs
    state = init_state()
    host_batch = _batch(c, channels=model_in_channels(model))
    batch = dp.shard_batch(host_batch)
    options = xla_options.tuned() if tuning else {}
    memory = {}
    peak_before = device_peak_bytes()
    t0 = time.perf_counter()
    m = None
    if dp.mode == "mesh":
        fn = fn.lower(state, batch).compile(options)
        compile_s = time.perf_counter() - t0
        memory = dict(_memory(fn), xla_flops=flops.xla_flops(fn))
        if steps or warmup:
            state, m = fn(state, batch)
    else:  # pmap compiles on its first call
        state, m = fn(state, batch)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        state, m = fn(state, batch)
    jax.block_until_ready((state, m))
    holder = {"state": state, "metrics": m}

    def run(n: int) -> float:
        """Seconds per step over ``n`` more steps (the state carries on)."""
        st, mt = holder["state"], holder["metrics"]
        t = time.perf_counter()
        for _ in range(n):
            st, mt = fn(st, batch)
        jax.block_until_ready((st, mt))
        holder.update(state=st, metrics=mt)
        return (time.perf_counter() - t) / max(n, 1)

    dt = run(steps) if steps else 0.0
    state, m = holder["state"], holder["metrics"]
    peak = device_peak_bytes()
    if peak is not None:  # the process's peak: this configuration's own when it rose during it
        memory.update(device_peak_gib=peak / 2.0 ** 30, device_peak_is_this_run=peak > (peak_before or 0))
    impl = "jax" if c.train.compute_dtype == "float32" else f"jax {c.train.compute_dtype}"
    options_used = {k: c.model.kwargs[k] for k in ("scan_layers", "remat_policy", "attention_impl")
                    if k in c.model.kwargs}
    out = dict(impl=impl + ("" if tuning or not xla_options.tuned() else " untuned"), norm=c.model.norm,
               params=param_count(state.params), compile_s=compile_s, ms_per_step=dt * 1e3 if steps else None,
               steps_per_s=1 / dt if steps else None, patches_per_s=c.data.batch_size / dt if steps else None,
               loss=float(m["loss"]) if m is not None else None, model_options=options_used,
               xla_options=options, **memory)
    raw = jax.device_get(state.variables("raw"))
    out["_forward"] = lambda x: np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(raw, x))
    out["_variables"] = raw
    out["_model"] = model
    out["_host_batch"] = host_batch
    out["_run"] = run
    out["_inputs"] = (holder["state"], batch, options)
    return out


def _time_jax_parts(c, step_result: dict, steps: int, warmup: int, *, tuning: bool) -> list[dict]:
    """The forward alone (the training loss, nothing kept for a backward) and the loss with its
    gradients (no optimizer, no EMA), compiled as their own programs on the step's state and batch."""
    import jax
    import jax.numpy as jnp
    from iln_jax.inference.precision import cast_floating
    from iln_jax.train.step import COMPUTE_DTYPES, restoration_loss

    state, batch, options = step_result.pop("_inputs")
    params = jax.tree.map(jnp.copy, state.params)  # the step donates its state: keep a copy of its own
    model, low = step_result["_model"], COMPUTE_DTYPES[c.train.compute_dtype]
    if low is not None:
        model = model.clone(dtype=low)
    key = jax.random.key(0)

    def loss(params, batch):
        if low is not None:
            params = cast_floating(params, low)
        mutable = list(state.model_state) or False
        out = model.apply({"params": params, **state.model_state}, batch["lq"], train=True, rngs={"dropout": key},
                          mutable=mutable)
        pred = out[0] if mutable else out
        return restoration_loss(pred.astype(jnp.float32), batch["gt"], c.loss)

    results = []
    for part, fn in (("forward", loss), ("loss+grad", jax.value_and_grad(loss))):
        t0 = time.perf_counter()
        compiled = jax.jit(fn).lower(params, batch).compile(options)
        compile_s = time.perf_counter() - t0
        for _ in range(warmup + 1):
            jax.block_until_ready(compiled(params, batch))

        def run(n: int, compiled=compiled) -> float:
            t = time.perf_counter()
            for _ in range(n):
                out = compiled(params, batch)
            jax.block_until_ready(out)
            return (time.perf_counter() - t) / max(n, 1)

        dt = run(steps)
        results.append(dict(impl=step_result["impl"], part=part, norm=c.model.norm, params=step_result["params"],
                            compile_s=compile_s, ms_per_step=dt * 1e3, steps_per_s=1 / dt,
                            patches_per_s=c.data.batch_size / dt, _run=run, **_memory(compiled)))
    return results


# --- the official PyTorch model -------------------------------------------------------------

def _torch_class(ref: Path, arch: str, norm: str):
    from iln_jax.compare.official_imports import load_file
    for rel, cls in TORCH_MODELS.get((arch, norm), []):
        path = ref / rel
        if path.exists():
            return getattr(load_file(path), cls)
    return None


def _timed_torch(fn, sync, last: dict):
    """``run(n)``: seconds per call over ``n`` calls of ``fn`` (synchronised); ``last["result"]`` is the last one's."""
    def run(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            last["result"] = fn()
        sync()
        return (time.perf_counter() - t) / max(n, 1)
    return run


def time_torch(c, refs: list, jax_result: dict, steps: int, warmup: int, *, parts: bool = False,
               autocast: str | None = None, count_flops: bool = False):
    """Time the official PyTorch model's train step on JAX's weights and batch (None when no ``refs``
    checkout has the class). ``autocast``: a dtype name (``"bfloat16"``) to run the forward pass under
    ``torch.autocast``, the counterpart of ``train.compute_dtype``; ``count_flops``: also count one
    loss + backward with ``FlopCounterMode`` (``torch_flops``). The forward outputs of both are
    compared at full float32 precision (``iln_jax.parity.full_precision``) before timing."""
    arch, norm = c.model.arch, c.model.norm
    import torch
    from iln_jax.compare.official_imports import install_stand_ins
    install_stand_ins()
    cls = next((k for k in (_torch_class(ref, arch, norm) for ref in refs) if k is not None), None)
    if cls is None:
        return None
    from iln_jax import convert, parity
    kwargs = {k: v for k, v in c.model.kwargs.to_dict().items() if v is not None}
    conv_arch = CONVERT_ARCH.get((arch, norm), arch)
    sd = convert.to_torch(conv_arch, jax_result["_variables"], norm=norm, **kwargs)
    ours_only = ("padding", "norm_eps", "scan_layers", "remat_policy", "attention_impl", "conv_impl", "dtype",
                 "bn_axis_name")
    official = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k not in ours_only}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    net = cls(**official).to(device)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    b = jax_result["_host_batch"]  # the very batch JAX's step was timed on
    x = torch.from_numpy(b["lq"]).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(b["gt"]).permute(0, 3, 1, 2).contiguous().to(device)
    net.eval()
    with torch.no_grad(), parity.full_precision():
        out_t = net(x).permute(0, 2, 3, 1).cpu().numpy()
        out_j = jax_result["_forward"](b["lq"])
    max_diff = float(np.abs(out_t - out_j).max())
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=c.optim.lr, betas=(c.optim.b1, c.optim.b2))
    ema = [p.detach().clone() for p in net.parameters()]
    decay = c.optim.ema_decay
    low = getattr(torch, autocast) if autocast else None

    def predict():
        if low is None:
            return net(x)
        with torch.autocast(device_type=device, dtype=low):
            return net(x).float()

    def loss_and_grad():
        opt.zero_grad(set_to_none=True)
        loss = (predict() - y).abs().mean()
        loss.backward()
        return loss

    def step():
        loss = loss_and_grad()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.mul_(decay).add_(p, alpha=1 - decay)
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    last = {}
    run = _timed_torch(step, sync, last)
    dt = run(steps)
    loss = last["result"]
    impl = f"torch {torch.__version__} ({device})" + (f" {autocast}" if autocast else "")
    n_params = sum(p.numel() for p in net.parameters())
    out = dict(impl=impl, norm=norm, params=n_params, compile_s=first, ms_per_step=dt * 1e3, steps_per_s=1 / dt,
               patches_per_s=c.data.batch_size / dt, loss=float(loss.detach()), forward_max_abs_diff_vs_jax=max_diff,
               _run=run)
    if device == "cuda":
        out["device_peak_gib"] = torch.cuda.max_memory_allocated() / 2.0 ** 30
        out["device_peak_is_this_run"] = True
    if count_flops:
        out["torch_flops"] = flops.torch_flops(loss_and_grad)
    if parts:
        def forward():
            with torch.no_grad():
                return (predict() - y).abs().mean()

        out["_parts"] = []
        for part, fn in (("forward", forward), ("loss+grad", loss_and_grad)):
            for _ in range(warmup + 1):
                fn()
            sync()
            run_part = _timed_torch(fn, sync, {})
            dt = run_part(steps)
            out["_parts"].append(dict(impl=impl, part=part, norm=norm, params=n_params, compile_s=0.0,
                                      ms_per_step=dt * 1e3, steps_per_s=1 / dt, patches_per_s=c.data.batch_size / dt,
                                      _run=run_part))
    return out


def device_info() -> dict:
    import jax
    d = jax.devices()[0]
    info = dict(jax=jax.__version__, backend=jax.default_backend(), device=d.device_kind,
                device_count=jax.device_count(), host=platform.node(), cpu=platform.processor() or platform.machine())
    try:
        import os
        info["cpu_count"] = os.cpu_count()
    except Exception:  # noqa: BLE001
        pass
    return info


def interleave_rounds(results: list, rounds: int, steps: int) -> None:
    """Time every configuration ``rounds`` times, round-robin, so that a slow spell of the machine
    hits all of them alike; each result gets its per-round times, the median and the fastest."""
    runs = [r for r in results if "_run" in r and r["ms_per_step"]]
    per_round = {id(r): [r["ms_per_step"]] for r in runs}
    for _ in range(rounds - 1):
        for r in runs:
            per_round[id(r)].append(r["_run"](steps) * 1e3)
    for r in runs:
        ms = per_round[id(r)]
        batch = r["patches_per_s"] * r["ms_per_step"] / 1e3
        r.update(round_ms=ms, ms_per_step=float(np.median(ms)), min_ms_per_step=min(ms))
        r.update(steps_per_s=1e3 / r["ms_per_step"], patches_per_s=batch * 1e3 / r["ms_per_step"])
    for r in results:
        r.pop("_run", None)


def per_round_ratio(a: dict, b: dict) -> dict:
    """Median and quartiles over rounds of ``a``'s time / ``b``'s time in the same round (interleaved runs)."""
    ratio = np.asarray(a["round_ms"]) / np.asarray(b["round_ms"])
    return dict(median=float(np.median(ratio)), q25=float(np.percentile(ratio, 25)),
                q75=float(np.percentile(ratio, 75)), rounds=len(ratio))


def finish_rounds_now(results: list, rounds: int, steps: int) -> None:
    """``--sequential``: time the remaining rounds of the configurations not finished yet, print their
    medians (a later phase may be killed for memory), then free their programs and return the memory."""
    pending = [r for r in results if "_run" in r]
    interleave_rounds(pending, rounds, steps)
    for x in pending:
        print(f"[bench] {x['impl']} {x['norm']}{' ' + x['part'] if 'part' in x else ''}: median "
              f"{x['ms_per_step']:.1f} ms/step, rounds {[round(ms, 1) for ms in x.get('round_ms', [])]}", flush=True)
    gc.collect()
    host_memory.release_freed_memory()


def build_report(a, c0, results: list, model_kwargs: dict, load_start, host_malloc_reused: bool,
                 *, partial: bool = False) -> dict:
    """The JSON report of ``results``. ``partial``: written before a phase that may be killed for memory
    (``--sequential``), so that what was measured survives; a result still in progress has its first
    timed round only."""
    report = dict(config=a.config, arch=c0.model.arch, batch=c0.data.batch_size, patch=c0.data.patch_size,
                  parallel=c0.train.parallel, steps=a.steps, rounds=a.rounds, sequential=a.sequential,
                  model_kwargs=model_kwargs,
                  load_average_start=load_start, load_average_end=os.getloadavg(), **device_info(),
                  host_malloc=a.host_malloc, host_malloc_reused=host_malloc_reused,
                  results=[{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
                  **({"partial": True} if partial else {}))
    steps_only = [r for r in results if "part" not in r]
    jax_runs = {r["norm"]: r for r in steps_only if r["impl"] == "jax"}
    torch_runs = {r["norm"]: r for r in steps_only if r["impl"].startswith("torch")}
    jax_ms = {n: r["ms_per_step"] for n, r in jax_runs.items()}
    torch_ms = {n: r["ms_per_step"] for n, r in torch_runs.items()}
    if "layernorm" in jax_ms:
        report["overhead_vs_layernorm_pct"] = {n: 100 * (ms / jax_ms["layernorm"] - 1) for n, ms in jax_ms.items()
                                               if n != "layernorm"}
    report["speed_vs_torch"] = {n: torch_ms[n] / jax_ms[n] for n in torch_ms if n in jax_ms}
    if not a.sequential:  # rounds of different configurations ran side by side: their ratios cancel the drift
        if "layernorm" in jax_runs:
            report["overhead_vs_layernorm_per_round"] = {
                n: per_round_ratio(r, jax_runs["layernorm"]) for n, r in jax_runs.items() if n != "layernorm"}
        report["speed_vs_torch_per_round"] = {n: per_round_ratio(torch_runs[n], jax_runs[n])
                                              for n in torch_runs if n in jax_runs}
    parts = {(r["impl"].split()[0], r["norm"], r["part"]): r["ms_per_step"] for r in results if "part" in r}
    report["parts_speed_vs_torch"] = {f"{n} {part}": parts[("torch", n, part)] / ms for (impl, n, part), ms
                                      in parts.items() if impl == "jax" and ("torch", n, part) in parts}
    return report


def main(argv=None):
    a = parse_args(argv)
    host_malloc_reused = host_memory.configure(a.host_malloc)
    load_start = os.getloadavg()
    norms = [n.strip() for n in a.norms.split(",") if n.strip()]
    dtypes = [d.strip() for d in a.compute_dtypes.split(",") if d.strip()]
    tunings = {"on": (True,), "off": (False,), "both": (False, True)}[a.xla_tuning]
    model_kwargs = json.loads(a.model_kwargs)
    if a.conv is not None and "conv_impl" in model_kwargs:
        raise SystemExit("give the convolution formulation once: --conv or --model-kwargs' conv_impl")
    conv = a.conv or model_kwargs.pop("conv_impl", "auto")
    convs = {"auto": ("auto",), "xla": ("xla",), "both": ("xla", "auto")}[conv]
    results, configs = [], {}

    def save_partial():
        if a.json:
            report = build_report(a, configs[norms[0]][0], results, model_kwargs, load_start, host_malloc_reused,
                                  partial=True)
            Path(a.json).write_text(json.dumps(report, indent=2) + "\n")

    for norm in norms:
        for dtype in dtypes:
            for tuning, conv in itertools.product(tunings, convs):
                c = _config(a.config, norm, a.batch, a.patch, a.parallel, {**model_kwargs, "conv_impl": conv})
                c.train.compute_dtype = dtype
                r = time_jax(c, a.steps, a.warmup, tuning=tuning, parts=a.parts)
                configs.setdefault(norm, (c, r))
                results += [r, *r.pop("_parts", [])]
                print(f"[bench] {r['impl']} {norm}: compile {r['compile_s']:.1f} s, {r['ms_per_step']:.1f} ms/step",
                      flush=True)
        c, r = configs[norm]
        if a.sequential:  # finish JAX's rounds and return its memory before PyTorch allocates
            finish_rounds_now(results, a.rounds, a.steps)
            save_partial()
        if a.torch_ref:
            try:
                t = time_torch(c, [Path(x).expanduser() for x in a.torch_ref.split(",")], r, a.steps, a.warmup,
                               parts=a.parts)
            except Exception as e:  # noqa: BLE001 - report and keep the JAX numbers
                print(f"[bench] torch reference failed for {norm}: {type(e).__name__}: {e}", flush=True)
                t = None
            if t is not None:
                results += [t, *t.pop("_parts", [])]
                print(f"[bench] {t['impl']} {norm}: {t['ms_per_step']:.1f} ms/step", flush=True)
                if a.sequential:
                    save_partial()
                    finish_rounds_now(results, a.rounds, a.steps)
        for r in results:
            for k in ("_variables", "_forward", "_model", "_inputs"):  # free the memory
                r.pop(k, None)
    interleave_rounds(results, a.rounds, a.steps)
    report = build_report(a, configs[norms[0]][0], results, model_kwargs, load_start, host_malloc_reused)
    return publish(report, format_table(report), a.json)


def publish(report: dict, table: str, json_path) -> dict:
    """Print a benchmark's table and, with ``json_path``, write its report there (every bench does both)."""
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_table(r: dict) -> str:
    lines = [f"{r['arch']} train step: global batch {r['batch']} x {r['patch']}x{r['patch']} LR patches, "
             f"{r['parallel']} over {r['device_count']} x {r['device']} ({r['backend']}, jax {r['jax']})"
             + (f", model options {r['model_kwargs']}" if r.get("model_kwargs") else ""),
             f"{'impl':<38}{'norm':<11}{'params':>12}{'compile s':>11}{'ms/step':>10}{'min ms':>9}{'steps/s':>9}"
             f"{'patches/s':>11}{'temp GiB':>10}"]
    for x in r["results"]:
        temp = f"{x['temp_gib']:>10.2f}" if "temp_gib" in x else f"{'-':>10}"
        impl = x["impl"] + (f" ({x['part']})" if "part" in x else "")
        lines.append(f"{impl:<38}{x['norm']:<11}{x['params']:>12,}{x['compile_s']:>11.2f}"
                     f"{x['ms_per_step']:>10.1f}{x.get('min_ms_per_step', x['ms_per_step']):>9.1f}"
                     f"{x['steps_per_s']:>9.3f}{x['patches_per_s']:>11.2f}{temp}")
        if "forward_max_abs_diff_vs_jax" in x:
            lines.append(f"{'':<38}(forward max |torch - jax| = {x['forward_max_abs_diff_vs_jax']:.2e}; "
                         f"'compile s' = first step)")
    if "load_average_start" in r:
        order = "rounds, JAX's then PyTorch's (--sequential)" if r.get("sequential") else "interleaved rounds"
        lines.append(f"ms/step: median of {r['rounds']} {order} of {r['steps']} steps; 1-min load average "
                     f"{r['load_average_start'][0]:.2f} before, {r['load_average_end'][0]:.2f} after")
    def per_round(key, n, fmt):
        q = r.get(key, {}).get(n)
        return f"; per round {fmt(q['median'])} [quartiles {fmt(q['q25'])}, {fmt(q['q75'])}]" if q else ""

    for n, pct in r.get("overhead_vs_layernorm_pct", {}).items():
        lines.append(f"step-time overhead of {n} vs layernorm: {pct:+.1f}% (medians)"
                     + per_round("overhead_vs_layernorm_per_round", n, lambda v: f"{100 * (v - 1):+.1f}%"))
    for n, ratio in r.get("speed_vs_torch", {}).items():
        lines.append(f"{n}: iln_jax runs at {ratio:.2f}x the official PyTorch model's speed (medians)"
                     + per_round("speed_vs_torch_per_round", n, lambda v: f"{v:.2f}x"))
    for name, ratio in r.get("parts_speed_vs_torch", {}).items():
        lines.append(f"{name} alone: iln_jax at {ratio:.2f}x PyTorch's speed")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
