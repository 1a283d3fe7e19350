"""Restorer: exact padding, shape buckets, tiled vs whole-image agreement, memory advice, self-ensemble."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax import models
from iln_jax.inference import ensemble, runner, tiling
from iln_jax.inference.runner import InsufficientMemoryError, Restorer


@pytest.fixture(scope="module")
def tiny():
    module = models.create("swinir", norm="iln", img_size=8, window_size=4, depths=(2,), num_heads=(2,), embed_dim=8,
                           mlp_ratio=2, upsampler="pixelshuffledirect", upscale=2)
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    # Random init is almost the identity on the body; make the blocks matter.
    variables = jax.tree.map(lambda v: v * 3.0 if v.ndim == 2 else v, variables)
    return module, variables


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(size=(h // 4 + 2, w // 4 + 2, 3))
    return np.kron(base, np.ones((4, 4, 1)))[:h, :w].astype(np.float32) * 0.8 + 0.1 * rng.uniform(size=(h, w, 3))


def test_tile_starts_cover_the_axis_with_a_flush_last_tile():
    assert tiling.tile_starts(10, 16, 4) == [0]
    assert tiling.tile_starts(40, 16, 4) == [0, 12, 24]
    starts = tiling.tile_starts(37, 16, 8)
    assert starts[-1] == 21 and all(b - a <= 8 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_starts(40, 16, 16)


@pytest.mark.parametrize("padding", ["reflect", "symmetric"])
def test_exact_padding_equals_module_apply(tiny, padding):
    module, variables = tiny
    module = module.clone(padding=padding)
    img = _image(13, 10)
    want = np.asarray(jax.jit(module.apply)(variables, img[None]))[0]
    got = Restorer(module, variables, bucket=0).restore(img)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_buckets_share_compilations_and_change_only_the_border(tiny):
    module, variables = tiny
    # Per-token LayerNorm: padding further changes only what lies in the receptive field of the
    # border. (i-LN's per-image statistics include the padding, so there it moves every pixel a little.)
    module = module.clone(norm="layernorm")
    images = [_image(h, w, i) for i, (h, w) in enumerate([(13, 10), (17, 14), (9, 7)])]
    exact = Restorer(module, variables, bucket=0)
    bucketed = Restorer(module, variables, bucket=32)
    for img in images:
        a, b = exact.restore(img), bucketed.restore(img)
        assert a.shape == b.shape
        # Away from the bottom/right border (receptive field) the two agree.
        np.testing.assert_allclose(a[:4, :4], b[:4, :4], atol=1e-3)
    assert len(exact.compiled_shapes) == 3
    assert len(bucketed.compiled_shapes) == 1


def test_tiled_matches_whole_image(tiny):
    module, variables = tiny
    img = _image(32, 24)
    whole = Restorer(module, variables).restore(img)
    single_tile = Restorer(module, variables, tile=64).restore(img)
    np.testing.assert_allclose(single_tile, whole, atol=1e-6)
    diffs = {}
    for overlap in (4, 8):
        r = Restorer(module, variables, tile=16, tile_overlap=overlap, tile_batch=2)
        out = r.restore(img)
        assert out.shape == whole.shape and r.compiled_shapes == [(2, 16, 16, 3)]
        diffs[overlap] = float(np.abs(out - whole).max())
    mean_blend = float(np.abs(Restorer(module, variables, tile=16, tile_overlap=8, blend="mean").restore(img)
                              - whole).max())
    print(f"tiled vs whole max |diff|: overlap 4 {diffs[4]:.2e}, overlap 8 {diffs[8]:.2e} (linear), "
          f"overlap 8 mean blend {mean_blend:.2e}")
    assert diffs[8] < 0.05
    assert diffs[8] <= diffs[4]


def test_too_large_image_gives_tiling_advice_or_tiles_automatically(tiny):
    module, variables = tiny
    img = _image(32, 32)
    big_plan = Restorer(module, variables)
    big_plan.fits((1, 32, 32, 3))
    limit = big_plan.planned[(1, 32, 32, 3)] // 2
    with pytest.raises(InsufficientMemoryError, match="--tile"):
        Restorer(module, variables, memory_limit_bytes=limit).restore(img)
    auto = Restorer(module, variables, memory_limit_bytes=limit, auto_tile=True, tile_overlap=8)
    out = auto.restore(img)
    assert auto.tiled_images == 1 and out.shape == (64, 64, 3)
    assert all(s[1] < 32 for s in auto.compiled_shapes[1:])


def test_dihedral_transforms_invert_and_self_ensemble_of_an_equivariant_map_is_exact():
    img = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    for k in range(8):
        np.testing.assert_array_equal(ensemble.inverse_dihedral(ensemble.dihedral(img, k), k), img)
    assert len({ensemble.dihedral(img, k).tobytes() for k in range(8)}) == 8
    np.testing.assert_allclose(ensemble.self_ensemble(lambda x: 2 * x + 1, img), 2 * img + 1)


def test_self_ensemble_runs_through_the_restorer(tiny):
    module, variables = tiny
    img = _image(12, 8)
    r = Restorer(module, variables, self_ensemble=True, bucket=0)
    out = r.restore(img)
    assert out.shape == (24, 16, 3) and np.all(np.isfinite(out))
    assert sorted(s[1:3] for s in r.compiled_shapes) == [(8, 12), (12, 8)]


def test_padded_size_rules():
    assert runner.padded_size(13, 4, "reflect") == 16
    assert runner.padded_size(12, 4, "reflect") == 12
    assert runner.padded_size(12, 4, "symmetric") == 16
    assert runner.padded_size(13, 4, "reflect", bucket=24) == 24
    with pytest.raises(ValueError, match="multiple"):
        runner.padded_size(13, 4, "none")


def test_choose_bucket_is_exact_when_few_shapes_else_smallest_sufficient_bucket():
    sizes = [(13, 13), (17, 9), (21, 30), (33, 14)]
    assert runner.choose_bucket(sizes, 4, "reflect", max_shapes=4) == 0
    bucket = runner.choose_bucket(sizes, 4, "reflect", max_shapes=2)
    assert bucket % 4 == 0 and runner.count_shapes(sizes, 4, "reflect", bucket) <= 2
    assert runner.count_shapes(sizes, 4, "reflect", bucket - 4) > 2 or bucket == 8
    assert runner.choose_bucket(sizes, 4, "reflect", max_shapes=1) >= 36  # one shape covers the largest
    assert runner.choose_bucket(sizes, 4, "none", max_shapes=1) == 0      # nothing may be padded
