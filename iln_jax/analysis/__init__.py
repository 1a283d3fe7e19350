"""The i-LN paper's analyses of a model or a run: plots and offline diagnostics.

* :mod:`iln_jax.diagnostics` (below this package: training records them too) -- per-block E[x^2],
  channel-wise entropy, max |x| (Fig. 1/3/5/8), captured with ``capture_intermediates`` (no model
  change); ``make_diagnostics_fn`` + ``DiagnosticsLog``, re-exported here
* ``bias_alignment`` -- biases vs. channel magnitudes before the final norm (Fig. 7)
* ``position_bias`` -- per-head relative-position-bias images (Fig. 9)
* ``plots`` -- PNGs; ``report.analyze_model`` -- everything for one checkpoint

In a loop of your own (one jitted call every K steps)::

    diag_fn = analysis.make_diagnostics_fn(model)                   # once
    diag_log = analysis.DiagnosticsLog(workdir, resume_step=start)  # <workdir>/diagnostics.jsonl
    if step % every == 0:
        diag_log.write(step, diag_fn(state.variables("raw"), batch["lq"]))
"""
from iln_jax.diagnostics import DiagnosticsLog, block_stats, capture_features, make_diagnostics_fn, read_diagnostics

__all__ = ["DiagnosticsLog", "block_stats", "capture_features", "make_diagnostics_fn", "read_diagnostics"]
