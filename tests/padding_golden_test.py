"""Inputs that are not a multiple of the window, against the official code's own padding.

``data/padding/`` (made by ``scripts/make_goldens.py``) holds, for the weights of a model golden, an
odd-sized input and the official output through the official padding path: SwinIR's forward
(``check_image_size``: reflect), HAT's and DRCT's model wrappers (``pre_process``/``post_process``:
reflect), and the SwinIR/DRCT test scripts (mirror padding that repeats the edge pixel and always adds
at least one row/column, a full window on a side that is already a multiple). The port runs them with
``padding="reflect"`` and ``padding="symmetric"`` respectively.
"""
import pytest

import golden
from iln_jax import convert

ARCH = {"swinir": "swinir", "hat": "hat", "drct": "drct"}
NAMES = golden.padding_names()


def test_every_backbone_and_both_padding_paths_have_a_golden():
    assert {(n.split("_")[0], golden.meta(n, "padding")["padding"]) for n in NAMES} >= {
        ("swinir", "reflect"), ("swinir", "symmetric"), ("hat", "reflect"), ("drct", "reflect"), ("drct", "symmetric")}


@pytest.mark.parametrize("name", NAMES)
def test_padded_forward_matches_the_official_padding_path(name):
    sd, kwargs, x, ref = golden.load_padding(name)
    window = kwargs["window_size"]
    assert x.shape[1] % window or x.shape[2] % window  # the golden pads
    module, variables = convert.from_torch(ARCH[name.split("_")[0]], sd, **kwargs)
    golden.assert_matches(golden.run(module, variables, x), ref)
