"""What ``bench/accelerator.py`` runs on the device, one section per process (``--section``).

Each section appends JSON lines to its ``--rows`` file as it measures (one record per golden check,
matrix product or train-step configuration, flushed at once), so a section stopped at the time
budget keeps what it measured. Sections:

* ``device``: the device and framework versions, the measured matrix-product peak of each framework
  (``bench/gemm.py``), then the forward and gradient goldens (``iln_jax.parity.goldens``) with the
  parity setting (``iln_jax.parity.full_precision``, must pass) and at the frameworks' defaults.
* ``model:<name>``: the full-size train step of one model (:data:`MODELS`) in every configuration of
  :func:`plan`, most wanted first, each against the official PyTorch step on the same device with the
  same weights (``bench/train_step.py``'s ``time_jax`` / ``time_torch``), with compile time, peak
  device memory, model FLOPs (``bench/flops.py``), achieved FLOP/s and MFU (``bench/peaks.py``).
  Before each configuration the section checks the time left before ``--deadline`` against the
  costliest configuration so far and skips it, with a note, rather than overrun.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import train_step as bench_step  # noqa: E402  (puts the repository root on sys.path)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    config: str          # config file[:args], as train.py takes it
    per_device_batch: int
    patch: int           # LR patch side
    share: float         # its part of the time left when its section starts, against the models after it
    kwargs: tuple = ()   # model arguments over the config's, as (name, value) pairs


MODELS = {"swinir-m": ModelSpec("configs/swinir.py:task=sr,scale=4", 4, 48, 0.4),
          "hat": ModelSpec("configs/hat.py:variant=hat,scale=4", 4, 64, 0.6)}
# --dry-run: the same code paths on CPU-test sizes (configs' tiny=1: one group of depth 2, E 8, window 4;
# HAT keeps the official "pixelshuffle" head, the only one the official HAT has)
DRY_MODELS = {"swinir-m": ModelSpec("configs/swinir.py:task=sr,scale=4,tiny=1", 1, 8, 0.4),
              "hat": ModelSpec("configs/hat.py:variant=hat,scale=4,tiny=1", 1, 8, 0.6,
                               (("upsampler", "pixelshuffle"),))}
DRY_FORWARD_GOLDENS = ("hat_iln_sr_x2",)
DRY_GRAD_GOLDENS = ("swinir_dn_3conv",)
HALF = ("bfloat16", "float16")


class Rows:
    """The section's JSON-lines output, one record per line, flushed as written."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def emit(self, kind: str, **fields) -> dict:
        record = {"kind": kind, **fields}
        self.file.write(json.dumps(record, default=_jsonable) + "\n")
        self.file.flush()
        return record


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def device_record() -> dict:
    import jax
    from iln_jax import parity
    torch = _torch()
    d = jax.devices()[0]
    info = dict(platform=d.platform, device_kind=d.device_kind, device_count=jax.device_count(),
                local_device_count=jax.local_device_count(), jax=jax.__version__, host=platform.node(),
                python=platform.python_version(), defaults=parity.precision_settings())
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info.update(torch_device=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version())
    return info


def torch_on_device(platform_name: str) -> Optional[str]:
    """None when PyTorch runs on the device JAX runs on, else why its reference is left out."""
    torch = _torch()
    if torch is None:
        return "PyTorch is not installed"
    if platform_name == "cpu" or (platform_name == "gpu" and torch.cuda.is_available()):
        return None
    return f"PyTorch does not see this {platform_name} device: no PyTorch reference on it"


# --- section "device" -----------------------------------------------------------------------------

def device_section(a, rows: Rows) -> None:
    import gemm
    info = rows.emit("device", **device_record())
    n, reps = (256, 2) if a.dry_run else (8192, 10)
    runs = [lambda: gemm.jax_gemm(n, "float32", reps=reps), lambda: gemm.jax_gemm(n, "float32", reps=reps,
                                                                                 precision="highest"),
            lambda: gemm.jax_gemm(n, "bfloat16", reps=reps)]
    if torch_on_device(info["platform"]) is None:
        runs.append(lambda: gemm.torch_gemm(n, "float32", reps=reps))
        if info.get("torch_cuda") or a.dry_run:
            runs.append(lambda: gemm.torch_gemm(n, "bfloat16", reps=reps))
    for run in runs:
        try:
            rows.emit("gemm", **run())
        except Exception as e:  # noqa: BLE001 - a missing kernel must not stop the goldens
            rows.emit("gemm", error=f"{type(e).__name__}: {e}")
    golden_checks(a, rows)


def golden_checks(a, rows: Rows) -> None:
    """Forward and gradient goldens, with the parity setting first (must pass), then at the defaults."""
    from iln_jax import parity
    from iln_jax.parity import goldens
    forward = DRY_FORWARD_GOLDENS if a.dry_run else goldens.FORWARD_NAMES
    grad = DRY_GRAD_GOLDENS if a.dry_run else goldens.FORWARD_NAMES
    for setting in ("highest", "default"):
        # the dry run checks the defaults' path (no context) on the forward goldens only
        for check, names in (("forward", forward), ("grad", () if a.dry_run and setting == "default" else grad)):
            for name in names:
                if time.time() > a.deadline:
                    rows.emit("golden", check=check, name=name, precision=setting, status="skipped",
                              note="time budget")
                    continue
                context = parity.full_precision() if setting == "highest" else contextlib.nullcontext()
                t0 = time.perf_counter()
                try:
                    with context:
                        report = (goldens.forward_report(name) if check == "forward"
                                  else goldens.grad_report(name, "unrolled"))
                    status = "ok"
                except Exception as e:  # noqa: BLE001 - reported as a failed check
                    report = dict(name=name, passed=False, failures=[f"{type(e).__name__}: {e}"])
                    status = "error"
                rows.emit("golden", check=check, precision=setting, status=status,
                          seconds=time.perf_counter() - t0, **report)


# --- section "model:<name>" -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Config:
    dtype: str
    norm: str
    attention: str                    # attention_impl
    precision: Optional[str] = None   # jax_default_matmul_precision (None: the backend's default)


def plan(norms, dtypes, full_precision_row: bool = True) -> list[Config]:
    """Configurations of a model, most wanted first: LayerNorm (both frameworks have it) before i-LN,
    float32 then bfloat16, XLA attention before cuDNN's; float32 at full precision (the PyTorch
    default's arithmetic) last."""
    out = []
    for norm in norms:
        for dtype in dtypes:
            out += [Config(dtype, norm, "xla"), Config(dtype, norm, "cudnn")]
    if full_precision_row and "float32" in dtypes:
        out.append(Config("float32", norms[0], "xla", "highest"))
    return out


def cudnn_unavailable(platform_name: str, dtype: str, head_dim: int) -> Optional[str]:
    """Why ``attention_impl="cudnn"`` (``jax.nn.dot_product_attention``'s cuDNN kernel) cannot run, or None."""
    if platform_name != "gpu":
        return f"cuDNN attention needs a CUDA GPU (JAX runs on {platform_name})"
    if dtype not in HALF:
        return f"cuDNN fused attention takes float16/bfloat16, not {dtype}"
    if head_dim % 8:
        return f"cuDNN fused attention needs a head width that is a multiple of 8 (this model's: {head_dim})"
    return None


class ModelRun:
    """One model's section: its configurations in order, each timed, skipped or reported unavailable."""

    def __init__(self, a, name: str, rows: Rows):
        import jax
        self.a, self.name, self.rows = a, name, rows
        self.spec = (DRY_MODELS if a.dry_run else MODELS)[name]
        self.info = device_record()
        self.platform, self.kind = self.info["platform"], self.info["device_kind"]
        self.devices = jax.device_count()
        self.global_batch = self.spec.per_device_batch * self.devices
        self.no_torch = torch_on_device(self.platform)
        self.refs = [Path(x).expanduser() for x in a.torch_ref.split(",")] if a.torch_ref else []
        self.model_flops: dict[str, int] = {}
        self.costliest_s = 0.0

    def config(self, cfg: Config):
        c = bench_step._config(self.spec.config, cfg.norm, self.global_batch, self.spec.patch, None,
                               {**dict(self.spec.kwargs), **json.loads(self.a.model_kwargs)})
        c.train.compute_dtype = cfg.dtype
        c.model.kwargs.attention_impl = cfg.attention
        return c

    def base(self, cfg: Config, c) -> dict:
        kw = c.model.kwargs
        return dict(model=self.name, arch=c.model.arch, config=self.spec.config, norm=cfg.norm,
                    compute_dtype=cfg.dtype, attention_impl=cfg.attention, matmul_precision=cfg.precision or "default",
                    global_batch=c.data.batch_size, patch=c.data.patch_size, devices=self.devices,
                    head_dim=int(kw.embed_dim) // int(kw.num_heads[0]),
                    model_kwargs=json.loads(self.a.model_kwargs))

    def run(self, cfgs: list[Config]) -> None:
        for cfg in cfgs:
            c = self.config(cfg)
            base = self.base(cfg, c)
            if cfg.attention == "cudnn":
                reason = cudnn_unavailable(self.platform, cfg.dtype, base["head_dim"])
                if reason:
                    self.rows.emit("step", impl="jax", status="unavailable", note=reason, **base)
                    continue
            left = self.a.deadline - time.time()
            if left < 1.1 * self.costliest_s or left <= 0:
                self.rows.emit("step", impl="jax", status="skipped", **base,
                               note=f"time budget: {max(left, 0):.0f} s left, the costliest configuration so far "
                                    f"took {self.costliest_s:.0f} s")
                continue
            t0 = time.time()
            try:
                self.measure(cfg, c, base)
            except Exception as e:  # noqa: BLE001 - one configuration's failure must not end the section
                self.rows.emit("step", impl="jax", status="failed", note=f"{type(e).__name__}: {e}",
                               traceback=traceback.format_exc(limit=6), **base)
            finally:
                gc.collect()
                torch = sys.modules.get("torch")
                if torch is not None and torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self.costliest_s = max(self.costliest_s, time.time() - t0)

    def flops_per_patch(self, cfg: Config, c) -> Optional[float]:
        import flops
        if cfg.norm not in self.model_flops:
            try:
                self.model_flops[cfg.norm] = flops.step_model_flops(c)
            except Exception as e:  # noqa: BLE001 - MFU left out, the timing kept
                print(f"[accelerator] model FLOPs of {self.name} {cfg.norm} not counted: {e}", flush=True)
                self.model_flops[cfg.norm] = None
        total = self.model_flops[cfg.norm]
        return total / c.data.batch_size if total else None

    def measure(self, cfg: Config, c, base: dict) -> None:
        """JAX's rounds, its row, then PyTorch's rounds and row: a section stopped in PyTorch's part keeps
        JAX's numbers. The rows share a ``pair`` key; the report puts PyTorch's time over JAX's in the JAX row."""
        import jax
        a = self.a
        with jax.default_matmul_precision(cfg.precision):
            r = bench_step.time_jax(c, a.steps, a.warmup)
        bench_step.interleave_rounds([r], a.rounds, a.steps)
        per_patch = self.flops_per_patch(cfg, c)
        pair = f"{self.name}/{cfg.dtype}/{cfg.norm}/{cfg.precision or 'default'}"
        base = dict(base, pair=pair)
        self.rows.emit("step", **self.step_row("jax", r, base, cfg, per_patch, self.devices))
        if cfg.attention != "xla":
            return
        t, torch_note = self.time_official(cfg, c, r)
        torch_base = dict(base, attention_impl="official",
                          matmul_precision="highest" if cfg.precision == "highest" else "torch default")
        if t is None:
            status, note = torch_note
            self.rows.emit("step", impl="torch", status=status, note=note, **torch_base)
            return
        bench_step.interleave_rounds([t], a.rounds, a.steps)
        torch_base.update(global_batch=self.spec.per_device_batch, devices=1)
        self.rows.emit("step", **self.step_row("torch", t, torch_base, cfg, per_patch, 1))

    def time_official(self, cfg: Config, c, r: dict) -> tuple[Optional[dict], Optional[tuple[str, str]]]:
        """PyTorch's step on one device with one device's share of JAX's batch (per-device throughputs
        compare) -> (its result, None) or (None, (status, why not))."""
        import official_standin
        from iln_jax import parity
        if self.no_torch or not self.refs:
            return None, ("unavailable", self.no_torch or "no --torch-ref checkout given")
        ct = c.copy_and_resolve_references()
        ct.data.batch_size = self.spec.per_device_batch
        one_device = dict(r, _host_batch={k: v[:ct.data.batch_size] for k, v in r["_host_batch"].items()})
        autocast = cfg.dtype if cfg.dtype in HALF else None
        try:
            with parity.full_precision() if cfg.precision == "highest" else contextlib.nullcontext():
                t = bench_step.time_torch(ct, self.refs, one_device, self.a.steps, self.a.warmup, autocast=autocast,
                                          count_flops=True)
        except Exception as e:  # noqa: BLE001 - the JAX measurement stands on its own
            return None, ("failed", f"{type(e).__name__}: {e}")
        if t is None:
            return None, ("unavailable", f"no official class for {c.model.arch} {cfg.norm} in {self.a.torch_ref}")
        t["standin"] = any(official_standin.is_standin(ref) for ref in self.refs)
        return t, None

    def step_row(self, impl: str, x: dict, base: dict, cfg: Config, per_patch: Optional[float], devices: int) -> dict:
        import peaks
        row = dict(base, **{k: v for k, v in x.items() if not k.startswith("_")})
        row.update(impl=impl, impl_detail=x["impl"], status="ok")
        gib = ("temp_gib", "argument_gib", "output_gib", "alias_gib")
        if all(k in row for k in gib):
            row["planned_gib"] = row["temp_gib"] + row["argument_gib"] + row["output_gib"] - row["alias_gib"]
        precision = cfg.precision if impl == "jax" else "highest"  # PyTorch multiplies float32 exactly by default
        peak, note = peaks.peak_flops(self.kind, self.platform, cfg.dtype, precision)
        per_device = row["patches_per_s"] / devices
        row.update(patches_per_s_per_device=per_device, peak_flops=peak, mfu_note=note,
                   model_flops_per_step=per_patch * row["global_batch"] if per_patch else None)
        if per_patch:
            achieved = per_patch * per_device
            row.update(model_tflops_per_s_per_device=achieved / 1e12, mfu=achieved / peak if peak else None)
        else:
            row.update(model_tflops_per_s_per_device=None, mfu=None)
        if row.get("standin"):
            row["note"] = "official_standin (dry run): not the official network, its numbers mean nothing"
        return row


# --dry-run: every path of plan() across the two models (both dtypes, both norms, PyTorch with and
# without autocast, i-LN's official class and a norm without one, cuDNN's refusal, full precision) in
# fewer compilations than the whole plan of each.
DRY_PLANS = {"swinir-m": [Config("float32", "layernorm", "xla"), Config("float32", "layernorm", "cudnn"),
                          Config("bfloat16", "iln", "xla"), Config("float32", "layernorm", "xla", "highest")],
             "hat": [Config("bfloat16", "layernorm", "xla"), Config("bfloat16", "layernorm", "cudnn"),
                     Config("float32", "iln", "xla")]}


def model_section(a, name: str, rows: Rows) -> None:
    norms = [n for n in a.norms.split(",") if n]
    dtypes = [d for d in a.dtypes.split(",") if d]
    ModelRun(a, name, rows).run(DRY_PLANS[name] if a.dry_run else plan(norms, dtypes))


def run_section(a) -> None:
    from iln_jax import host_memory
    host_memory.configure(a.host_malloc)
    import jax
    if a.dry_run:  # the tests' setting: compile faster, numerics at round-off level
        jax.config.update("jax_disable_most_optimizations", True)
    rows = Rows(Path(a.rows))
    if a.section == "device":
        device_section(a, rows)
    elif a.section.startswith("model:"):
        model_section(a, a.section.split(":", 1)[1], rows)
    else:
        raise SystemExit(f"unknown --section {a.section!r}")
