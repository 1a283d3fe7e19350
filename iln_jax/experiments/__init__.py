"""The paper's normalization experiments as one resumable command (``python -m iln_jax.experiments.grid``).

* :mod:`plan`    -- which runs a grid has (one recipe; norms x their seeds) and where they live;
* :mod:`run`     -- one run: train (a normal, exactly resumable work directory), evaluate, precision;
* :mod:`tables`  -- Table 1 (PSNR/SSIM per norm and dataset, mean ± std over seeds) and Table 3 (low precision);
* :mod:`convergence` -- the "did not converge" mark and the test that fired;
* :mod:`figures` -- Figure 1/5/8-style plots from the per-block diagnostics;
* :mod:`grid`    -- the command: runs one after another, or side by side on disjoint device sets.
"""
