"""The accelerator benchmark's report: the sections' records gathered into one JSON document and a
Markdown table (``docs/results/accelerator_<device>.{json,md}``), rewritten after every section."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Optional


def device_slug(device: Optional[dict], dry_run: bool) -> str:
    """``nvidia_h200``, ``tpu_v5_lite_x8``, ``cpu_dry_run``: the file name's device part."""
    if not device:
        slug = "unknown"
    else:
        slug = re.sub(r"[^a-z0-9]+", "_", device["device_kind"].lower()).strip("_") or device["platform"]
        if device.get("device_count", 1) > 1:
            slug += f"_x{device['device_count']}"
    return slug + ("_dry_run" if dry_run else "")


class Report:
    def __init__(self, command: list[str], *, dry_run: bool, budget_s: float, out_dir: Path):
        self.started = time.time()
        self.head = dict(command=" ".join(command), dry_run=dry_run, budget_s=budget_s,
                         started=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)))
        self.out_dir = Path(out_dir)
        self.sections: list[dict] = []
        self.records: list[dict] = []

    def add_section(self, name: str, status: str, seconds: float, records: list[dict], note: str = "") -> None:
        self.sections.append(dict(name=name, status=status, seconds=round(seconds, 1),
                                  records=len(records), **({"note": note} if note else {})))
        self.records += records

    def _of(self, kind: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "kind"} for r in self.records if r["kind"] == kind]

    def document(self, partial: bool) -> dict:
        device = next(iter(self._of("device")), None)
        goldens = self._of("golden")
        summary = {}
        for setting in ("highest", "default"):
            ran = [g for g in goldens if g["precision"] == setting]
            checked = [g for g in ran if g.get("status") != "skipped"]
            summary[setting] = dict(checks=len(checked), passed=sum(bool(g.get("passed")) for g in checked),
                                    failed=[f"{g['check']} {g['name']}" for g in checked if not g.get("passed")],
                                    skipped=len(ran) - len(checked))
        return dict(self.head, elapsed_s=round(time.time() - self.started, 1), partial=partial, device=device,
                    sections=self.sections, gemm=self._of("gemm"), goldens_summary=summary, goldens=goldens,
                    train_steps=with_speed_vs_torch(self._of("step")))

    def paths(self) -> tuple[Path, Path]:
        slug = device_slug(next(iter(self._of("device")), None), self.head["dry_run"])
        base = self.out_dir / f"accelerator_{slug}"
        return base.with_suffix(".json"), base.with_suffix(".md")

    def write(self, partial: bool) -> tuple[Path, Path]:
        doc = self.document(partial)
        json_path, md_path = self.paths()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        md_path.write_text(markdown(doc))
        return json_path, md_path


def with_speed_vs_torch(steps: list[dict]) -> list[dict]:
    """``vs_torch`` in each timed JAX row: the official step's time over JAX's, for the same patches per
    device (the two rows share a ``pair`` key; > 1: iln_jax is faster)."""
    torch_ms = {r["pair"]: r["ms_per_step"] for r in steps if r["impl"] == "torch" and r["status"] == "ok"}
    for r in steps:
        if r["impl"] == "jax" and r["status"] == "ok" and r.get("pair") in torch_ms:
            r["vs_torch"] = torch_ms[r["pair"]] / r["ms_per_step"]
    return steps


def _num(value, fmt: str, missing: str = "—") -> str:
    return missing if value is None else format(value, fmt)


def markdown(doc: dict) -> str:
    d = doc["device"] or {}
    title = f"{d.get('device_count', '?')} x {d.get('device_kind', 'unknown device')} ({d.get('platform', '?')})"
    lines = [f"# Accelerator benchmark: {title}", "",
             f"`{doc['command']}` — {doc['started']}, {doc['elapsed_s']:.0f} s of a {doc['budget_s']:.0f} s budget"
             + (" — **partial** (a section is still running or was stopped)" if doc["partial"] else "")
             + (" — **dry run** (tiny models on CPU: the numbers mean nothing)" if doc["dry_run"] else ""), "",
             f"jax {d.get('jax', '?')}, torch {d.get('torch', '—')}"
             + (f" (CUDA {d['cuda']}, cuDNN {d['cudnn']})" if d.get("cuda") else "")
             + f"; precision defaults: {json.dumps(d.get('defaults', {}))}", "",
             "| section | status | seconds | records |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']}{' — ' + s['note'] if s.get('note') else ''} | {s['seconds']:.0f} "
              f"| {s['records']} |" for s in doc["sections"]]
    if doc["gemm"]:
        lines += ["", "Measured matrix-product peak (square n x n, best of the timed products):", "",
                  "| framework | dtype | precision | n | TFLOP/s |", "|---|---|---|---|---|"]
        lines += [f"| {g['framework']} | {g['dtype']} | {g['precision']} | {g['n']} | {g['gflops_per_s'] / 1e3:.3g} |"
                  if "error" not in g else f"| — | — | — | — | {g['error']} |" for g in doc["gemm"]]
    lines += _golden_table(doc)
    lines += _step_table(doc["train_steps"])
    return "\n".join(lines) + "\n"


def _golden_table(doc: dict) -> list[str]:
    goldens = doc["goldens"]
    if not goldens:
        return []
    s = doc["goldens_summary"]
    lines = ["", f"Goldens (official PyTorch outputs, gradients, Adam steps, EMA): parity setting (`highest`) "
                 f"{s['highest']['passed']}/{s['highest']['checks']} passed ({s['highest']['skipped']} skipped), "
                 f"defaults {s['default']['passed']}/{s['default']['checks']} passed "
                 f"({s['default']['skipped']} skipped).", "",
             "| check | golden | precision | passed | error | note |", "|---|---|---|---|---|---|"]
    for g in goldens:
        err = g.get("relative_error", g.get("grad_relative_to_scale"))
        what = "max rel" if "relative_error" in g else "grad/max|grad|"
        note = g.get("note") or "; ".join(g.get("failures", []))
        lines.append(f"| {g['check']} | {g['name']} | {g['precision']} | {'yes' if g.get('passed') else 'NO'} "
                     f"| {_num(err, '.2e')} {what if err is not None else ''} | {note} |")
    return lines


def _step_table(steps: list[dict]) -> list[str]:
    if not steps:
        return []
    lines = ["", "Train step (forward, L1, backward, Adam, EMA). *vs PyTorch*: the official step's time over "
                 "iln_jax's for the same patches per device (> 1: iln_jax faster), medians of their rounds. "
                 "*MFU*: model FLOPs (matmuls and convolutions, forward and backward) per second per device over "
                 "the device's peak for the step's matmul arithmetic (bench/peaks.py). *peak*: device memory at its "
                 "peak (≤: a bound, an earlier configuration of the process peaked higher); *planned*: XLA's plan; "
                 "*compile s*: PyTorch's first step.",
             "", "| model | dtype | precision | norm | impl | attention | compile s | ms/step | patches/s/dev "
                 "| vs PyTorch | peak GiB | planned GiB | TFLOP/s/dev | MFU | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in steps:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['compute_dtype']} | {r['matmul_precision']} | {r['norm']} | "
                         f"{r['impl']} | {r['attention_impl']} | | | | | | | | | {r['status']}: {r.get('note', '')} |")
            continue
        peak = r.get("device_peak_gib")
        peak_s = "—" if peak is None else f"{'' if r.get('device_peak_is_this_run') else '≤'}{peak:.2f}"
        lines.append(
            f"| {r['model']} | {r['compute_dtype']} | {r['matmul_precision']} | {r['norm']} | {r['impl']} | "
            f"{r['attention_impl']} | {_num(r.get('compile_s'), '.1f')} | {_num(r.get('ms_per_step'), '.1f')} | "
            f"{_num(r.get('patches_per_s_per_device'), '.1f')} | {_num(r.get('vs_torch'), '.2f')} | {peak_s} | "
            f"{_num(r.get('planned_gib'), '.2f')} | {_num(r.get('model_tflops_per_s_per_device'), '.3g')} | "
            f"{_num(r.get('mfu'), '.1%')} | {r.get('note') or (r['mfu_note'] if r.get('mfu') is None else '')} |")
    return lines
