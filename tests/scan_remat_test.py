"""scan_layers and remat_policy change how a model is traced, never what it computes.

Scanned and rematerialised SR models give the unrolled model's outputs (<= 1e-6 relative) and
gradients (each tensor within 1e-5 of its own largest entry) in every option (SwinIR's two equal
groups only in the option its gradient golden is not run in), variables of every
backbone convert both ways (``iln_jax.models.scan_layout``), and the per-block diagnostics name the
same blocks. The U-Nets' execution modes are checked against the official gradients and Adam steps
themselves (grad_golden_test.py: Restormer in all four modes, HINT unrolled and scanned+remat).
"""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from iln_jax.parity import checks as grad_checks
from iln_jax.parity import goldens
from iln_jax import analysis, models
from iln_jax.models import scan_layout

import golden
from backbone_smoke import synthetic_variables

SR = dict(img_size=16, window_size=4, embed_dim=16, upscale=2, upsampler="pixelshuffle", mlp_ratio=2)
CASES = {
    # identical groups, even depth: groups and pairs scanned
    "swinir": ("swinir", dict(SR, depths=(2, 2), num_heads=(2, 2))),
    # odd depth (a tail block) and unequal groups (groups unrolled, pairs scanned)
    "swinir_odd_unequal": ("swinir", dict(SR, depths=(3, 1), num_heads=(2, 4))),
    "hat": ("hat", dict(SR, window_size=8, embed_dim=24, depths=(2, 2), num_heads=(2, 2), squeeze_factor=6)),
    "drct": ("drct", dict(SR, window_size=8, embed_dim=24, gc=8, depths=(1, 1), num_heads=(2, 2))),
    "restormer": ("restormer", dict(dim=8, num_blocks=(1, 1, 1, 2), num_refinement_blocks=2, heads=(1, 2, 2, 4))),
    "hint": ("hint", dict(dim=16, num_blocks=(1, 2, 1, 2), num_refinement_blocks=2, heads=(1, 2, 2, 4))),
}
OPTIONS = [dict(scan_layers=True), dict(remat_policy="block"), dict(scan_layers=True, remat_policy="dots"),
           dict(remat_policy="dots_no_batch_and_convs")]
UNETS = ("restormer", "hint")  # their modes: against the official goldens (grad_golden_test.py)
# SwinIR's golden has this case's shape (two equal groups of two blocks) and is run in every mode of
# goldens.MODES against the official gradients: here it takes the remat policy the goldens do not run.
IN_GOLDEN_MODES = {("swinir", tuple(sorted(mode.items()))) for mode in goldens.MODES.values()}
COMBOS = [(name, options) for name in CASES for options in OPTIONS
          if name not in UNETS and (name, tuple(sorted(options.items()))) not in IN_GOLDEN_MODES]


GRAD_RTOL = 1e-5  # per tensor; the same float32 operations traced differently differ at round-off


def _case(name, norm="iln", **options):
    arch, kwargs = CASES[name]
    return models.create(arch, norm=norm, **kwargs, **options)


def _input(batch=2, side=16):
    return jnp.asarray(np.random.default_rng(0).uniform(size=(batch, side, side, 3)), jnp.float32)


def _loss_and_grads(module, variables, x):
    def loss(params):
        return jnp.mean(jnp.square(module.apply({**variables, "params": params}, x)))
    return jax.jit(jax.value_and_grad(loss))(variables["params"])


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-30))


@functools.lru_cache(maxsize=None)
def _unrolled(name):
    module = _case(name)
    x = _input()
    variables = synthetic_variables(module, x)
    loss, grads = _loss_and_grads(module, variables, x)
    return x, variables, loss, grads


@pytest.mark.parametrize("name,options", [pytest.param(n, o, id=f"{n}-{o}") for n, o in COMBOS])
def test_outputs_and_gradients_equal_the_unrolled_model(name, options):
    x, variables, ref_loss, ref_grads = _unrolled(name)
    module = _case(name, **options)
    converted = scan_layout.to_scanned(module, variables)
    loss, grads = _loss_and_grads(module, converted, x)
    assert _rel(loss, ref_loss) <= 1e-6
    grads = scan_layout.params_to_unrolled(module, grads)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    # every tensor against its own scale: a small one (a position table, a norm affine) is checked too
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    failures = grad_checks.gradient_failures(flat(grads), flat(ref_grads), rtol=GRAD_RTOL)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("name", list(CASES))
def test_layout_round_trip_is_exact_and_stacks_the_repeated_blocks(name):
    module = _case(name, scan_layers=True)
    variables = synthetic_variables(_case(name), _input())
    scanned = scan_layout.to_scanned(module, variables)
    init_shapes = jax.eval_shape(module.init, jax.random.key(0), _input())
    assert jax.tree.map(np.shape, scanned) == jax.tree.map(np.shape, init_shapes)
    back = scan_layout.to_unrolled(module, scanned)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(a, b)


def test_swinir_case_has_the_shape_its_gradient_golden_runs_in_every_mode():
    """What lets COMBOS leave SwinIR's golden modes out: the golden's official model has this file's
    case's groups (two equal groups of two blocks, two heads each), and grad_golden_test runs it in
    every mode of goldens.MODES."""
    assert "swinir_sr_x2_pixelshuffle" in goldens.FORWARD_NAMES
    table = re.compile(r"sd/layers\.(\d+)\.residual_group\.blocks\.(\d+)\.attn\.relative_position_bias_table$")
    heads = {}  # group -> heads of each of its blocks
    with np.load(golden.DATA / "swinir_sr_x2_pixelshuffle.npz") as z:
        for key in z.files:
            if m := table.match(key):
                heads.setdefault(int(m[1]), {})[int(m[2])] = z[key].shape[-1]
    groups = [heads[g] for g in sorted(heads)]
    assert tuple(len(blocks) for blocks in groups) == CASES["swinir"][1]["depths"]
    assert tuple(set(blocks.values()).pop() for blocks in groups) == CASES["swinir"][1]["num_heads"]
    assert all(len(set(blocks.values())) == 1 for blocks in groups)


def test_scanned_parameter_names():
    params = jax.eval_shape(_case("swinir", scan_layers=True).init, jax.random.key(0), _input())["params"]
    qkv = params["layers"]["residual_group"]["pairs"]["shifted"]["attn"]["qkv"]["kernel"]
    assert qkv.shape == (2, 1, 16, 48)  # (groups, pairs, in, out)
    params = jax.eval_shape(_case("swinir_odd_unequal", scan_layers=True).init, jax.random.key(0), _input())["params"]
    assert params["layers_0"]["residual_group"]["pairs"]["unshifted"]["attn"]["qkv"]["kernel"].shape == (1, 16, 48)
    assert params["layers_0"]["residual_group"]["tail"]["attn"]["qkv"]["kernel"].shape == (16, 48)
    assert set(params["layers_1"]["residual_group"]) == {"tail"}  # depth 1: nothing to pair


def test_dropout_and_drop_path_train_in_both_layouts():
    x = _input()
    for options in ({}, {"scan_layers": True}):
        module = _case("swinir", **options).clone(drop_path_rate=0.5)
        variables = scan_layout.to_scanned(module, synthetic_variables(_case("swinir"), x))
        forward = jax.jit(lambda v, key, module=module: module.apply(v, x, train=True, rngs={"dropout": key}))
        a, b = forward(variables, jax.random.key(1)), forward(variables, jax.random.key(2))
        assert not np.allclose(a, b)  # drop-path is live (and its rate reaches every scanned block)


def test_batchnorm_statistics_are_stacked_and_updated():
    module = _case("swinir", norm="batchnorm", scan_layers=True)
    x = _input()
    variables = scan_layout.to_scanned(module, synthetic_variables(_case("swinir", norm="batchnorm"), x))
    mean = variables["batch_stats"]["layers"]["residual_group"]["pairs"]["unshifted"]["norm1"]["mean"]
    assert mean.shape == (2, 1, 16)
    _, updated = jax.jit(lambda v: module.apply(v, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": jax.random.key(1)}))(variables)
    new = updated["batch_stats"]["layers"]["residual_group"]["pairs"]["unshifted"]["norm1"]["mean"]
    assert np.all(np.abs(new - mean) > 0)


@pytest.mark.parametrize("name", ["swinir", "hat", "restormer"])
def test_diagnostics_name_and_measure_the_same_blocks(name):
    x = _input()
    flat = _case(name)
    variables = synthetic_variables(flat, x)
    scanned = _case(name, scan_layers=True)
    ref = analysis.make_diagnostics_fn(flat)(variables, x)
    ours = analysis.make_diagnostics_fn(scanned)(scan_layout.to_scanned(scanned, variables), x)
    assert list(ours) == list(ref)
    for k in ref:
        np.testing.assert_allclose(float(ours[k]), float(ref[k]), rtol=1e-5, err_msg=k)


def test_remat_policies_and_the_official_alias():
    assert set(models.REMAT_POLICIES) >= {"none", "block", "dots"}
    module = _case("swinir", use_checkpoint=True)
    assert module.effective_remat == "block"
    with pytest.raises(ValueError, match="swinir: Unknown remat_policy 'everything'; valid: none, block"):
        _case("swinir", remat_policy="everything")


def _gradient_temp_bytes(module, x, policy):
    """XLA's planned temp memory of the gradient of ``module`` under ``remat_policy=policy``."""
    m = module.clone(remat_policy=policy)
    params = jax.eval_shape(m.init, jax.random.key(0), x)["params"]
    f = jax.jit(jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x))))
    return f.lower(params).compile().memory_analysis().temp_size_in_bytes


def test_scanned_remat_keeps_less_for_the_backward_pass():
    module = models.create("swinir", img_size=32, window_size=8, embed_dim=32, depths=(6, 6), num_heads=(2, 2),
                           upscale=2, upsampler="pixelshuffle", scan_layers=True)
    temp_bytes = functools.partial(_gradient_temp_bytes, module, _input(side=32))
    none, dots, block = temp_bytes("none"), temp_bytes("dots"), temp_bytes("block")
    assert block < dots < none / 2


def test_unrolled_remat_keeps_less_for_the_backward_pass():
    # XLA:CPU drops jax.checkpoint's CSE barriers; unrolled remat must still keep less (ordered_remat).
    # one group of four blocks (shifted and unshifted windows, then the OCAB): at 24 channels on 32^2
    # block/dots/none keep 14/22/40 MB, far enough apart; two groups only doubled the compile time
    module = models.create("hat", img_size=32, window_size=8, embed_dim=24, depths=(4,), num_heads=(2,),
                           upscale=2, upsampler="pixelshuffle", squeeze_factor=6)
    temp_bytes = functools.partial(_gradient_temp_bytes, module, _input(side=32))
    none, block = temp_bytes("none"), temp_bytes("block")
    dots, convs = temp_bytes("dots"), temp_bytes("dots_no_batch_and_convs")
    assert block < dots <= convs < none * 0.75, (block, dots, convs, none)


@functools.lru_cache(maxsize=None)
def _attention_case():
    module = _case("hat", norm="layernorm")
    x = _input()
    return module, x, synthetic_variables(module, x)


def test_jax_attention_implementation_equals_xla():
    module, x, variables = _attention_case()
    ref = jax.jit(module.apply)(variables, x)
    out = jax.jit(module.clone(attention_impl="jax").apply)(variables, x)
    assert _rel(out, ref) <= 1e-6
    with pytest.raises(ValueError, match="Unknown attention_impl 'flash'"):
        module.clone(attention_impl="flash").apply(variables, x)
    with pytest.raises(ValueError, match="hat: Unknown attention_impl 'flash'"):
        _case("hat", attention_impl="flash")


def _convolutions(module, variables, x) -> int:
    return jax.jit(module.apply).lower(variables, x).as_text().count("stablehlo.convolution")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU formulations")
def test_conv_impl_is_a_model_field_that_scanned_and_rematerialised_models_follow(monkeypatch):
    module = _case("hat", scan_layers=True, remat_policy="dots")
    x = _input()
    variables = scan_layout.to_scanned(module, synthetic_variables(_case("hat"), x))
    xla = module.clone(conv_impl="xla")
    # On the CPU, "auto" computes HAT's 1x1 channel-attention convs as matmuls: fewer XLA convolutions.
    assert module.conv_impl == "auto" and _convolutions(module, variables, x) < _convolutions(xla, variables, x)
    loss, grads = _loss_and_grads(module, variables, x)
    loss_xla, grads_xla = _loss_and_grads(xla, variables, x)
    assert _rel(loss, loss_xla) <= 1e-5
    assert max(_rel(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_xla))) <= 1e-4
    monkeypatch.setenv("ILN_JAX_CONV", "xla")  # the environment overrides every model's field
    assert _convolutions(module, variables, x) == _convolutions(xla, variables, x)
    with pytest.raises(ValueError, match="hat: Unknown conv_impl 'cudnn'; valid: auto, xla"):
        _case("hat", conv_impl="cudnn")
