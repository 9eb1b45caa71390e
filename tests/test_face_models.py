"""The face GAN's networks and pix2pixHD's LocalEnhancer: tiny-config values, loading the global
stage, and paper-size parameter counts (abstract shapes only)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.models import (FaceDiscriminator, FaceResidualGenerator, GlobalGenerator, LocalEnhancer,
                            MultiscaleDiscriminator, NLayerDiscriminator, ResnetBlock, conv, conv_transpose_x2,
                            downsample, face_models, load_global_params, param_count, reflect_pad)
from edn_jax.training import losses

TINY_FACE_G = dict(ngf=8, n_downsampling=3, n_blocks=1)
TINY_LOCAL = dict(ngf=4, global_ngf=8, n_downsampling_global=2, n_blocks_global=1, n_blocks_local=2)


def rand(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, scale, shape), jnp.float32)


def init(model, *args):
    """Jitted init: one compile instead of one per initializer and layer (the suite runs on 2 busy cores)."""
    return jax.jit(model.init)(jax.random.key(0), *args)["params"]


def random_params(model, *args, seed=10, scale=0.05):
    """Random weights in the model's parameter tree, without compiling its initializers."""
    leaves, tree = jax.tree_util.tree_flatten(jax.eval_shape(model.init, jax.random.key(0), *args)["params"])
    return jax.tree_util.tree_unflatten(tree, [rand(leaf.shape, seed + i, scale) for i, leaf in enumerate(leaves)])


def conv_params(k, cin, cout, bias=True):
    """Kernel plus bias; convs followed by InstanceNorm have no bias."""
    return k * k * cin * cout + (cout if bias else 0)


def global_generator_params(cin, ngf, n, blocks, head=True):
    return (conv_params(7, cin, ngf, bias=False)
            + sum(conv_params(3, ngf * 2 ** i, ngf * 2 ** (i + 1), bias=False) for i in range(n))
            + blocks * 2 * conv_params(3, ngf * 2 ** n, ngf * 2 ** n, bias=False)
            + sum(conv_params(3, ngf * 2 ** (n - i), ngf * 2 ** (n - i - 1), bias=False) for i in range(n))
            + (conv_params(7, ngf, 3) if head else 0))


# ---- face generator -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_g():
    model = FaceResidualGenerator(**TINY_FACE_G)
    label = jnp.clip(rand((2, 32, 32, 3), seed=1), -1, 1)
    g_crop = jnp.tanh(rand((2, 32, 32, 3), seed=2, scale=2.0))  # G's output: tanh, some values near +-1
    return model, init(model, label, g_crop), label, g_crop


def test_face_generator_starts_as_identity(face_g):
    model, params, label, g_crop = face_g
    assert set(params) == {"generator", "head"}
    body = jax.eval_shape(functools.partial(GlobalGenerator(ngf=8, n_downsampling=3, n_blocks=1).init,
                                            method=GlobalGenerator.features),
                          jax.random.key(0), jnp.zeros((1, 32, 32, 6)))["params"]
    assert jax.tree_util.tree_structure(params["generator"]) == jax.tree_util.tree_structure(body)
    assert not np.any(params["head"]["kernel"]) and not np.any(params["head"]["bias"])
    refined, residual = jax.jit(lambda p: (model.apply({"params": p}, label, g_crop),
                                           model.apply({"params": p}, label, g_crop, method=model.residual)))(params)
    assert refined.shape == g_crop.shape and refined.dtype == jnp.float32
    np.testing.assert_array_equal(refined, g_crop)  # exactly G's crop at the start of the face stage
    np.testing.assert_array_equal(residual, 0.0)


def test_face_generator_residual_and_gradients(face_g):
    model, params, label, g_crop = face_g
    target = jnp.clip(g_crop + 0.3, -1, 1)

    @jax.jit
    def forward_and_grad(p):
        def loss(q):
            refined, residual = model.apply({"params": q}, label, g_crop,
                                            method=lambda m, *a: (m(*a), m.residual(*a)))
            return jnp.mean(jnp.abs(refined - target)), (refined, residual)

        (_, (refined, residual)), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return refined, residual, grads

    _, _, grads = forward_and_grad(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    # At zero init only the head learns (the body's gradient goes through the zero kernel).
    assert float(jnp.max(jnp.abs(grads["head"]["kernel"]))) > 0 and float(jnp.max(jnp.abs(grads["head"]["bias"]))) > 0
    assert all(not np.any(g) for g in jax.tree_util.tree_leaves(grads["generator"]))

    trained = {**params, "head": {"kernel": rand(params["head"]["kernel"].shape, seed=3, scale=0.05),
                                  "bias": rand((3,), seed=4, scale=0.5)}}
    refined, residual, grads = forward_and_grad(trained)
    assert residual.shape == g_crop.shape and float(jnp.max(jnp.abs(residual))) <= 1.0
    assert float(jnp.std(residual)) > 1e-2
    np.testing.assert_array_equal(refined, np.clip(g_crop + residual, -1, 1))
    assert float(jnp.max(refined)) == 1.0  # the clip binds somewhere: G's crop is near 1 and the bias pushes up
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.max(jnp.abs(grads["generator"]["stem"]["kernel"]))) > 0


# ---- face discriminator -------------------------------------------------------------------------

def test_face_discriminator_is_one_patchgan_scale():
    label, crop = rand((2, 64, 64, 3), seed=5), rand((2, 64, 64, 3), seed=6)
    model = FaceDiscriminator(ndf=8, n_layers=3, norm="instance")
    params = random_params(model, label, crop)

    @jax.jit
    def run(p):
        out = model.apply({"params": p}, label, crop)
        fake = model.apply({"params": p}, label, jnp.zeros_like(crop))
        want = NLayerDiscriminator(ndf=8, n_layers=3).apply({"params": p["scale_0"]},
                                                            jnp.concatenate([label, crop], axis=-1))
        return out, want, losses.lsgan_d_loss(out, fake), losses.feature_matching_loss(out, fake)

    out, want, d_loss, feat_loss = run(params)
    assert len(out) == 1 and len(out[0]) == 3 + 2
    # 4x4 convs, zero padding 2: 64 -> 33 -> 17 -> 9 (stride 2), -> 10 -> 11 (stride 1).
    assert [f.shape for f in out[0]] == [(2, 33, 33, 8), (2, 17, 17, 16), (2, 9, 9, 32), (2, 10, 10, 64),
                                         (2, 11, 11, 1)]
    for got, w in zip(out[0], want):
        np.testing.assert_allclose(got, w, atol=1e-6)
    # Same tree as a one-scale MultiscaleDiscriminator: its losses and checkpoints carry over.
    multi = jax.eval_shape(MultiscaleDiscriminator(num_d=1, ndf=8, n_layers=3).init, jax.random.key(0),
                           jnp.zeros((1, 64, 64, 6)))
    assert jax.tree_util.tree_structure(multi["params"]) == jax.tree_util.tree_structure(params)
    assert float(d_loss) > 0 and float(feat_loss) > 0  # the one-scale list fits the multiscale losses


def test_batchnorm_face_discriminator_takes_its_statistics_from_the_crops_with_a_face():
    """The original's face D (BatchNorm): each crop's score depends on the batch's statistics, which
    come only from the crops ``mask`` picks (a frame without a face must not shift them); the
    running averages move by torch's momentum 0.1 towards those statistics."""
    label, crop = rand((4, 32, 32, 3), seed=5), rand((4, 32, 32, 3), seed=6)
    model = FaceDiscriminator(ndf=8, n_layers=3, norm="batch")
    variables = model.init(jax.random.key(0), label, crop)
    assert set(variables) == {"params", "batch_stats"}
    mask = jnp.array([True, True, False, True])

    def scores(label, crop, mask=None):
        out, updates = model.apply(variables, label, crop, mask, mutable=["batch_stats"])
        return out[0][-1], updates["batch_stats"]

    masked, stats = scores(label, crop, mask)
    picked = np.flatnonzero(np.asarray(mask))
    alone, alone_stats = scores(label[picked], crop[picked])
    np.testing.assert_allclose(masked[picked], alone, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), stats, alone_stats)
    # The masked-out crop changes nothing of the others' scores; unmasked, it does (batch statistics).
    other = crop.at[2].set(-crop[2])
    np.testing.assert_allclose(scores(label, other, mask)[0][picked], masked[picked], atol=1e-6)
    assert float(jnp.abs(scores(label, other)[0][picked] - scores(label, crop)[0][picked]).max()) > 1e-4
    # Running mean: 0.9 * 0 (its start) + 0.1 * the batch mean; variance from 1 towards the batch's.
    mean = stats["scale_0"]["norm_1"]["mean"]
    assert float(jnp.abs(mean).max()) > 0
    np.testing.assert_allclose(variables["batch_stats"]["scale_0"]["norm_1"]["var"], 1.0)
    # A batch whose mask picks nothing uses all its crops (no empty statistics, no NaN).
    nothing, _ = scores(label, crop, jnp.zeros(4, bool))
    np.testing.assert_allclose(nothing, scores(label, crop)[0], atol=1e-6)


def test_face_models_builder():
    g, d = face_models(ngf=16, ndf=32, dtype=jnp.bfloat16)
    assert (g.ngf, g.n_downsampling, g.n_blocks, g.dtype) == (16, 3, 5, jnp.bfloat16)
    assert (d.ndf, d.n_layers, d.dtype) == (32, 3, jnp.bfloat16)


# ---- local enhancer -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local():
    model = LocalEnhancer(**TINY_LOCAL)
    x = jnp.clip(rand((2, 16, 24, 6), seed=7), -1, 1)
    return model, random_params(model, x), x


def test_local_enhancer_matches_its_definition(local):
    model, params, x = local
    assert set(params) == {"global_generator", "stem", "down", "blocks_0", "blocks_1", "up", "head"}

    def inorm(v):
        return (v - v.mean(axis=(1, 2), keepdims=True)) / jnp.sqrt(v.var(axis=(1, 2), keepdims=True) + 1e-5)

    def by_hand(p):
        """Local front + global features of the pooled input, blocks, 2x up, 7x7 conv, tanh."""
        g = GlobalGenerator(ngf=8, n_downsampling=2, n_blocks=1).apply(
            {"params": p["global_generator"]}, downsample(x), method=GlobalGenerator.features)
        h = jax.nn.relu(inorm(conv(4, 7, use_bias=False).apply({"params": p["stem"]}, reflect_pad(x, 3))))
        h = jax.nn.relu(inorm(conv(8, 3, strides=2, padding=1, use_bias=False).apply({"params": p["down"]}, h))) + g
        for i in range(2):
            h = ResnetBlock(8).apply({"params": p[f"blocks_{i}"]}, h)
        h = jax.nn.relu(inorm(conv_transpose_x2(4, use_bias=False).apply({"params": p["up"]}, h)))
        return g, jnp.tanh(conv(3, 7).apply({"params": p["head"]}, reflect_pad(h, 3)))

    y, (g, want) = jax.jit(lambda p: (model.apply({"params": p}, x), by_hand(p)))(params)
    assert y.shape == (2, 16, 24, 3) and float(jnp.max(jnp.abs(y))) <= 1.0 and float(jnp.std(y)) > 1e-3
    assert g.shape == (2, 8, 12, 8)  # global_ngf channels at half resolution
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_load_global_params(local):
    model, params, x = local
    standalone = GlobalGenerator(ngf=8, n_downsampling=2, n_blocks=1)
    trained = random_params(standalone, downsample(x), seed=100)  # stands in for a trained G
    assert set(trained) - set(params["global_generator"]) == {"head"}
    loaded = load_global_params(params, trained)
    for name in set(params) - {"global_generator"}:
        assert loaded[name] is params[name]
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded["global_generator"],
                           {k: v for k, v in trained.items() if k != "head"})
    got, before, want = jax.jit(lambda: (
        model.apply({"params": loaded}, x, method=LocalEnhancer.global_features),
        model.apply({"params": params}, x, method=LocalEnhancer.global_features),
        standalone.apply({"params": trained}, downsample(x), method=GlobalGenerator.features)))()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(before, want, atol=1e-3)
    for wrong in [dict(ngf=8, n_blocks=2), dict(ngf=16, n_blocks=1)]:  # another tree; same tree, other shapes
        shapes = jax.eval_shape(GlobalGenerator(n_downsampling=2, **wrong).init, jax.random.key(0), downsample(x))
        with pytest.raises(EdnError, match="do not fit") as e:
            load_global_params(params, shapes["params"])
        assert "\n" not in str(e.value)


def test_local_enhancer_rejects_bad_configs():
    x = jnp.zeros((1, 16, 24, 6))
    with pytest.raises(EdnError, match=r"global_ngf = 2 \* ngf"):
        jax.eval_shape(LocalEnhancer(**{**TINY_LOCAL, "global_ngf": 16}).init, jax.random.key(0), x)
    with pytest.raises(EdnError, match=r"20x24 .*divisible by 2 \* 2\*\*n_downsampling_global = 8"):
        jax.eval_shape(LocalEnhancer(**TINY_LOCAL).init, jax.random.key(0), jnp.zeros((1, 20, 24, 6)))


# ---- paper-size parameter counts ----------------------------------------------------------------

def test_paper_local_enhancer_param_count():
    """Global ngf 64, 4 down, 9 blocks (its head unused) + local ngf 32, 3 blocks; 6 input channels."""
    shapes = jax.eval_shape(LocalEnhancer(ngf=32, global_ngf=64, n_downsampling_global=4, n_blocks_global=9,
                                          n_blocks_local=3).init,
                            jax.random.key(0), jax.ShapeDtypeStruct((1, 512, 1024, 6), jnp.float32))
    ngf = 32
    local_branch = (conv_params(7, 6, ngf, bias=False) + conv_params(3, ngf, 2 * ngf, bias=False)
                    + 3 * 2 * conv_params(3, 2 * ngf, 2 * ngf, bias=False)
                    + conv_params(3, 2 * ngf, ngf, bias=False) + conv_params(7, ngf, 3))
    global_stage = global_generator_params(6, 64, 4, 9, head=False)
    assert (local_branch, global_stage) == (272_163, 182_421_888)
    assert param_count(shapes["params"]["global_generator"]) == global_stage
    assert param_count(shapes) == local_branch + global_stage == 182_694_051


def test_paper_face_param_counts():
    """Face G: GlobalGenerator(ngf 64, 3 down, 5 blocks) + residual head on label + G crops (6 channels);
    face D: one NLayerDiscriminator(ndf 64, 3 layers) on 6 channels. At 128x128 crops."""
    crop = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    g_shapes = jax.eval_shape(FaceResidualGenerator(ngf=64).init, jax.random.key(0), crop, crop)
    d_shapes = jax.eval_shape(FaceDiscriminator(ndf=64, n_layers=3).init, jax.random.key(0), crop, crop)
    g_expected = global_generator_params(6, 64, 3, 5)
    channels = [6, 64, 128, 256, 512, 1]
    normed = [False, True, True, True, False]
    d_expected = sum(conv_params(4, cin, cout, bias=not n) for cin, cout, n in zip(channels, channels[1:], normed))
    batch_norm = 2 * sum(channels[2:5])  # BatchNorm's scale and bias after each normed conv (the original's face D)
    assert (g_expected, d_expected + batch_norm) == (26_717_763, 2_768_705)
    assert param_count(g_shapes) == g_expected
    assert param_count(d_shapes["params"]) == d_expected + batch_norm
    # Its running averages (mean and variance per normed channel) are state, not parameters.
    assert param_count(d_shapes["batch_stats"]) == batch_norm
