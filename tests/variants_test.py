"""Named variants: each builds with the parameter count of the official PyTorch model.

Counts are ``sum(p.numel() for p in model.parameters())`` of the official modules built with the
same kwargs (HAT 1638a9a8, DRCT c0a8b51e, SwinIR 6545850f; x4 for SR). ``jax.eval_shape`` only
traces, so even HAT-L costs no memory or FLOPs.
"""
import pytest

import golden
from iln_jax import models

OFFICIAL_PARAMS = {
    "hat-s": 9_621_183,
    "hat": 20_772_507,
    "hat-l": 40_846_575,
    "hat-mini": 4_623_807,  # also the official i-LN HAT-mini's (gamma/beta in place of weight/bias)
    "drct": 14_139_579,
    "drct-l": 27_580_719,
    "swinir-classical": 11_900_199,
    "swinir-lightweight": 929_628,
    "swinir-realsr-m": 11_715_559,
    "swinir-realsr-l": 28_013_059,
    "swinir-dn": 11_504_163,
    "swinir-car": 11_492_067,
}


def test_every_variant_has_an_official_count():
    assert set(OFFICIAL_PARAMS) == set(models.VARIANTS)


@pytest.mark.parametrize("name", list(OFFICIAL_PARAMS))
def test_parameter_count_is_the_official_one(name):
    kwargs = models.variant_kwargs(name)
    module = models.create(models.variant_arch(name), **kwargs)
    side = kwargs["window_size"]
    assert golden.count_params(module, (1, side, side, kwargs["in_chans"])) == OFFICIAL_PARAMS[name]


def test_overrides_and_unknown_names():
    assert models.variant_kwargs("hat", upscale=2)["upscale"] == 2
    assert models.variant_kwargs("hat")["upscale"] == 4  # the table itself is not modified
    with pytest.raises(ValueError, match="valid variants: hat-s, hat, hat-l"):
        models.variant_kwargs("hat-xl")
