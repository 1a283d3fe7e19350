"""Peak matmul FLOP/s of common accelerators, per chip, dense (no structured sparsity), for MFU.

MFU (model FLOPs utilisation, as MaxText reports it): the model's FLOPs per step / step time / the
chip's peak for the arithmetic its matmuls run in. That arithmetic follows the compute dtype and
JAX's matmul precision: bfloat16 -> the bfloat16 tensor-core / MXU peak; float32 at JAX's default
precision -> TF32 tensor cores on NVIDIA Ampere and later, one bfloat16 pass on TPU; float32 at
``"highest"`` -> the CUDA cores' float32 peak on NVIDIA (TPUs emulate it with several bfloat16
passes: no single peak, MFU left out).

Sources (datasheets; NVIDIA quotes TF32/BF16 with 2:4 sparsity, halved here to dense):
  H100 SXM / PCIe / NVL: NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100):
    FP32 67 / 51 / 60 TFLOPS, TF32 989 / 756 / 835 (sparse), BF16 1979 / 1513 / 1671 (sparse).
  H200 SXM / NVL: NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): FP32 67 / 60,
    TF32 989 / 835 (sparse), BF16 1979 / 1671 (sparse).
  A100 (SXM and PCIe, 40/80 GB): NVIDIA A100 datasheet: FP32 19.5, TF32 156, BF16 312 (dense).
  L4: NVIDIA L4 datasheet: FP32 30.3, TF32 120 (sparse), BF16 242 (sparse).
  Cloud TPU v4 / v5e / v5p / v6e: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e}: 275 / 197 / 459 / 918
    TFLOPS bfloat16 per chip.
jax's ``device_kind`` strings: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200",
"NVIDIA A100-SXM4-80GB", "NVIDIA L4", "TPU v4", "TPU v5 lite" (v5e), "TPU v5" / "TPU v5p", "TPU v6 lite" (v6e).
"""
from __future__ import annotations

import re
from typing import Optional

T = 1e12
# (pattern, full match on the lower-cased device_kind) -> peak FLOP/s per arithmetic; first match wins.
PEAKS: list[tuple[str, dict[str, float]]] = [
    (r"nvidia h200 nvl.*", dict(bf16=1671 / 2 * T, tf32=835 / 2 * T, fp32=60 * T)),
    (r"nvidia h200.*", dict(bf16=1979 / 2 * T, tf32=989 / 2 * T, fp32=67 * T)),
    (r"nvidia h100 nvl.*", dict(bf16=1671 / 2 * T, tf32=835 / 2 * T, fp32=60 * T)),
    (r"nvidia h100 pcie.*", dict(bf16=1513 / 2 * T, tf32=756 / 2 * T, fp32=51 * T)),
    (r"nvidia h100.*", dict(bf16=1979 / 2 * T, tf32=989 / 2 * T, fp32=67 * T)),
    (r"nvidia a100.*", dict(bf16=312 * T, tf32=156 * T, fp32=19.5 * T)),
    (r"nvidia l4", dict(bf16=242 / 2 * T, tf32=120 / 2 * T, fp32=30.3 * T)),
    (r"tpu v4", dict(bf16=275 * T)),
    (r"tpu v5 lite|tpu v5e", dict(bf16=197 * T)),
    (r"tpu v5p?", dict(bf16=459 * T)),
    (r"tpu v6 lite|tpu v6e", dict(bf16=918 * T)),
]


def device_peaks(device_kind: str) -> Optional[dict[str, float]]:
    kind = device_kind.strip().lower()
    return next((peaks for pattern, peaks in PEAKS if re.fullmatch(pattern, kind)), None)


def matmul_arithmetic(platform: str, compute_dtype: str, matmul_precision: Optional[str]) -> Optional[str]:
    """The arithmetic a step's matmuls run in: ``bf16``, ``tf32``, ``fp32``, or None (no single one)."""
    if compute_dtype in ("bfloat16", "float16"):
        return "bf16"
    full = matmul_precision in ("highest", "float32", "F32_F32_F32")
    if platform == "gpu":
        return "fp32" if full else "tf32"
    if platform == "tpu":
        return None if full else "bf16"
    return "fp32"


def peak_flops(device_kind: str, platform: str, compute_dtype: str,
               matmul_precision: Optional[str]) -> tuple[Optional[float], str]:
    """(peak FLOP/s for the step's arithmetic or None, a note saying which peak or why none)."""
    peaks = device_peaks(device_kind)
    if peaks is None:
        return None, f"no peak FLOP/s known for {device_kind!r} (bench/peaks.py): MFU not computed"
    arithmetic = matmul_arithmetic(platform, compute_dtype, matmul_precision)
    if arithmetic is None or arithmetic not in peaks:
        return None, (f"{compute_dtype} at matmul precision {matmul_precision} has no single peak on "
                      f"{device_kind}: MFU not computed")
    return peaks[arithmetic], f"{arithmetic} peak of {device_kind}, {peaks[arithmetic] / T:.1f} TFLOP/s (dense)"
