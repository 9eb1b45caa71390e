"""pix2pixHD's networks: layer semantics against NumPy references of the PyTorch definitions,
tiny-config behaviour, and paper-size parameter counts (abstract shapes only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from edn_jax.errors import EdnError
from edn_jax.models import (GlobalGenerator, InstanceNorm, MultiscaleDiscriminator, NLayerDiscriminator, ResnetBlock,
                            conv, conv_transpose_x2, downsample, param_count, reflect_pad)

TINY_G = dict(ngf=8, n_downsampling=2, n_blocks=2)
TINY_D = dict(num_d=2, ndf=8, n_layers=3)


def rand(shape, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(0, scale, shape), jnp.float32)


@pytest.fixture(scope="module")
def tiny_g():
    model = GlobalGenerator(**TINY_G)
    x = jnp.clip(rand((2, 32, 32, 6), seed=1), -1, 1)
    return model, model.init(jax.random.key(0), x)["params"], x


@pytest.fixture(scope="module")
def tiny_d():
    model = MultiscaleDiscriminator(**TINY_D)
    x = rand((2, 32, 32, 12), seed=2)
    return model, model.init(jax.random.key(1), x)["params"], x


# ---- layers -------------------------------------------------------------------------------------

def test_instance_norm_normalizes_per_example_and_channel_without_params():
    x = rand((2, 6, 5, 3)) * jnp.array([1.0, 5.0, 0.1]) + jnp.array([3.0, -2.0, 10.0])
    norm = InstanceNorm()
    variables = norm.init(jax.random.key(0), x)
    assert variables == {}
    y = np.asarray(norm.apply(variables, x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    v = np.asarray(x).var(axis=(1, 2))
    np.testing.assert_allclose(y.var(axis=(1, 2)), v / (v + 1e-5), rtol=1e-4)  # eps 1e-5, biased var
    # bfloat16 activations: statistics still in float32, only the output is rounded.
    xb = (x + 100.0).astype(jnp.bfloat16)  # a large offset that a bfloat16 mean would swallow
    yb = InstanceNorm().apply({}, xb)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(yb, np.float32),
                                  np.asarray(InstanceNorm().apply({}, xb.astype(jnp.float32)).astype(jnp.bfloat16),
                                             np.float32))


def test_reflect_pad_matches_numpy():
    x = rand((1, 4, 5, 2))
    np.testing.assert_array_equal(reflect_pad(x, 3), np.pad(np.asarray(x), ((0, 0), (3, 3), (3, 3), (0, 0)),
                                                            mode="reflect"))


def torch_conv_transpose(x, weight, bias, stride=2, padding=1, output_padding=1):
    """PyTorch's ConvTranspose2d by its definition: input pixel (iy, ix) scatters weight[:, :, ky, kx]
    to output (iy*stride - padding + ky, ...); output size (H-1)*stride - 2*padding + k + output_padding."""
    n, h, w, _ = x.shape
    cin, cout, k, _ = weight.shape
    oh, ow = [(s - 1) * stride - 2 * padding + k + output_padding for s in (h, w)]
    out = np.tile(bias, (n, oh, ow, 1)).astype(np.float64)
    for iy in range(h):
        for ix in range(w):
            for ky in range(k):
                for kx in range(k):
                    oy, ox = iy * stride - padding + ky, ix * stride - padding + kx
                    if 0 <= oy < oh and 0 <= ox < ow:
                        out[:, oy, ox] += x[:, iy, ix] @ weight[:, :, ky, kx]
    return out


def test_transposed_conv_matches_pytorch_definition():
    x = rand((2, 3, 4, 2), seed=3)
    layer = conv_transpose_x2(3)
    assert layer.init(jax.random.key(0), x)["params"]["kernel"].shape == (3, 3, 2, 3)  # HWIO
    params = {"kernel": rand((3, 3, 2, 3), seed=4), "bias": rand((3,), seed=5)}  # asymmetric, nonzero bias
    y = np.asarray(layer.apply({"params": params}, x))
    assert y.shape == (2, 6, 8, 3)  # exactly 2x
    torch_weight = np.asarray(params["kernel"])[::-1, ::-1].transpose(2, 3, 0, 1)  # (cin, cout, ky, kx)
    ref = torch_conv_transpose(np.asarray(x, np.float64), torch_weight, np.asarray(params["bias"]))
    np.testing.assert_allclose(y, ref, atol=1e-5)


def _value_and_grads(fn, x, kernel):
    y, vjp = jax.vjp(fn, x, kernel)
    return (y, *vjp(rand(y.shape, seed=9)))


def test_fast_conv_forms_match_plain_lax_convs_and_their_gradients():
    """The faster forms in layers (explicit padding, space-to-depth stride-2 conv, sub-pixel transposed
    conv, row-folded narrow conv) compute the plain convolutions they replace: same outputs and
    input/kernel gradients."""
    from jax import lax
    from edn_jax.models import layers

    dn = ("NHWC", "HWIO", "NHWC")
    x = rand((2, 9, 10, 5), seed=6)
    cases = [  # (layer, its params' kernel shape, the plain lax conv it must equal)
        (conv(4, 4, strides=1, padding=2, use_bias=False), (4, 4, 5, 4),
         lambda x, k: lax.conv_general_dilated(x, k, (1, 1), ((2, 2), (2, 2)), dimension_numbers=dn)),
        (conv(4, 3, strides=2, padding=1, use_bias=False), (3, 3, 5, 4),
         lambda x, k: lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)),
        (conv(4, 4, strides=2, padding=2, use_bias=False), (4, 4, 5, 4),  # space-to-depth, odd input width
         lambda x, k: lax.conv_general_dilated(x, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=dn)),
        (conv(3, 7, use_bias=False), (7, 7, 5, 3),
         lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=dn)),
        (conv_transpose_x2(4, use_bias=False), (3, 3, 5, 4),  # flax's ConvTranspose: conv of the dilated input
         lambda x, k: lax.conv_general_dilated(x, k, (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2),
                                               dimension_numbers=dn)),
    ]
    for layer, shape, plain in cases:
        xi = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0))) if shape[0] == 7 else x
        kernel = rand(shape, seed=7)
        assert layer.init(jax.random.key(0), xi)["params"]["kernel"].shape == shape
        fast = _value_and_grads(lambda x, k: layer.apply({"params": {"kernel": k}}, x), xi, kernel)
        for got, want in zip(fast, _value_and_grads(plain, xi, kernel), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The 7x7 conv to 3 channels really takes the row-folded path (a custom VJP), and a conv it does not fit does not.
    assert "custom_vjp" in str(jax.make_jaxpr(lambda x: conv(3, 7).apply(conv(3, 7).init(jax.random.key(0), x), x))(
        jnp.zeros((1, 8, 8, 5))))
    assert not layers._use_row_folding((7, 7, 6, 16)) and layers._use_row_folding((7, 7, 16, 3))


def test_conv_init_std_and_zero_bias(tiny_g):
    big = conv(256, 3).init(jax.random.key(0), jnp.zeros((1, 3, 3, 256)))["params"]
    k = np.asarray(big["kernel"])
    assert k.size == 3 * 3 * 256 * 256
    assert abs(k.std() - 0.02) < 0.0005 and abs(k.mean()) < 0.0005
    _, params, _ = tiny_g
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        assert leaf.dtype == jnp.float32
        if path[-1].key == "bias":
            assert not np.any(np.asarray(leaf)), path
        else:
            assert abs(float(jnp.std(leaf)) - 0.02) < 0.02 * 0.3, path  # small kernels: loose


def avg_pool_reference(x):
    """3x3 window centred on (2*oy, 2*ox); out-of-image taps are dropped from the mean."""
    n, h, w, c = x.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    out = np.zeros((n, oh, ow, c))
    for oy in range(oh):
        for ox in range(ow):
            rows = slice(max(2 * oy - 1, 0), min(2 * oy + 2, h))
            cols = slice(max(2 * ox - 1, 0), min(2 * ox + 2, w))
            out[:, oy, ox] = x[:, rows, cols].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_downsample_excludes_padding(shape):
    x = rand(shape, seed=6) + 5.0  # far from zero: counting the zero padding would show at the borders
    y = downsample(x)
    ref = avg_pool_reference(np.asarray(x, np.float64))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5)


# ---- generator ----------------------------------------------------------------------------------

def test_resnet_block_is_identity_when_second_conv_is_zero():
    x = rand((2, 8, 8, 4), seed=7)
    block = ResnetBlock(4)
    params = block.init(jax.random.key(0), x)["params"]
    assert not np.allclose(block.apply({"params": params}, x), x, atol=1e-3)
    zeroed = {**params, "conv2": {**params["conv2"], "kernel": jnp.zeros_like(params["conv2"]["kernel"])}}
    np.testing.assert_array_equal(block.apply({"params": zeroed}, x), x)


def test_generator_tiny(tiny_g):
    model, params, x = tiny_g
    y, f = model.apply({"params": params}, x, return_features=True)
    assert y.shape == (2, 32, 32, 3) and f.shape == (2, 32, 32, 8)
    assert float(jnp.max(jnp.abs(y))) <= 1.0 and float(jnp.std(y)) > 1e-3
    assert float(jnp.min(f)) >= 0.0  # features end on ReLU
    np.testing.assert_array_equal(model.apply({"params": params}, x), y)  # deterministic
    np.testing.assert_array_equal(model.init(jax.random.key(0), x)["params"]["stem"]["kernel"],
                                  params["stem"]["kernel"])
    np.testing.assert_array_equal(model.apply({"params": params}, x, method=GlobalGenerator.features), f)
    # features -> head composes to the image, as a LocalEnhancer will rely on.
    head = conv(3, 7)
    np.testing.assert_allclose(jnp.tanh(head.apply({"params": params["head"]}, reflect_pad(f, 3))), y, atol=1e-6)
    # The head is the only thing past `features`: initialized alone, features has no head params.
    feature_params = model.init(jax.random.key(0), x, method=GlobalGenerator.features)["params"]
    assert set(params) - set(feature_params) == {"head"}

    jitted = jax.jit(lambda p, x: model.apply({"params": p}, x))
    np.testing.assert_allclose(jitted(params, x), y, atol=1e-5)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(jnp.square(model.apply({"params": p}, x) - 0.5))))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads["head"]))
    assert float(jnp.max(jnp.abs(grads["stem"]["kernel"]))) > 0


@pytest.mark.parametrize("hw, n_down", [((30, 32), 2), ((32, 36), 3), ((64, 48), 5)])
def test_generator_rejects_indivisible_size(hw, n_down):
    model = GlobalGenerator(ngf=4, n_downsampling=n_down, n_blocks=1)
    with pytest.raises(EdnError, match=rf"{hw[0]}x{hw[1]}.*divisible by 2\*\*n_downsampling = {2 ** n_down}") as e:
        model.init(jax.random.key(0), jnp.zeros((1, *hw, 3)))
    assert "\n" not in str(e.value) and "resize or crop" in str(e.value)


def test_generator_bfloat16_compute_close_to_float32(tiny_g):
    model, params, x = tiny_g
    bf = GlobalGenerator(**TINY_G, dtype=jnp.bfloat16)
    bf_params = bf.init(jax.random.key(0), x)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(bf_params))
    jax.tree_util.tree_map(np.testing.assert_array_equal, bf_params, params)  # same init, float32 params
    y_bf, f_bf = bf.apply({"params": params}, x, return_features=True)
    assert y_bf.dtype == jnp.bfloat16 and f_bf.dtype == jnp.bfloat16
    diff = np.abs(np.asarray(y_bf, np.float32) - np.asarray(model.apply({"params": params}, x)))
    assert diff.mean() < 0.01 and diff.max() < 0.08, (diff.mean(), diff.max())


# ---- discriminators -----------------------------------------------------------------------------

def patch_sizes(size, n_layers):
    """Spatial size after each 4x4 conv with zero padding 2: n_layers stride 2, then two stride 1."""
    sizes = []
    for stride in [2] * n_layers + [1, 1]:
        size = (size + 2 * 2 - 4) // stride + 1
        sizes.append(size)
    return sizes


@pytest.mark.parametrize("n_layers", [2, 3])
def test_nlayer_discriminator_features(n_layers):
    x = rand((2, 32, 32, 12), seed=8)
    model = NLayerDiscriminator(ndf=8, n_layers=n_layers)
    params = model.init(jax.random.key(0), x)["params"]
    feats = model.apply({"params": params}, x)
    assert len(feats) == n_layers + 2
    channels = [min(8 * 2 ** n, 512) for n in range(n_layers + 1)] + [1]
    assert [f.shape for f in feats] == [(2, s, s, c) for s, c in zip(patch_sizes(32, n_layers), channels)]
    # Each layer by hand from the previous output: 4x4 conv with zero padding 2; the first without
    # norm, the middle ones instance-normalized (eps 1e-5), all but the last with LeakyReLU 0.2.
    def conv_by_hand(y, n, stride):
        p = params[f"conv_{n}"]
        return jax.lax.conv_general_dilated(y, p["kernel"], (stride, stride), ((2, 2), (2, 2)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + p.get("bias", 0.0)

    def lrelu(y):
        return np.where(y > 0, y, 0.2 * y)

    def inorm(y):
        y = np.asarray(y, np.float64)
        return (y - y.mean(axis=(1, 2), keepdims=True)) / np.sqrt(y.var(axis=(1, 2), keepdims=True) + 1e-5)

    np.testing.assert_allclose(feats[0], lrelu(conv_by_hand(x, 0, 2)), atol=1e-5)
    for n in range(1, n_layers + 1):
        want = lrelu(inorm(conv_by_hand(feats[n - 1], n, 2 if n < n_layers else 1)))
        np.testing.assert_allclose(feats[n], want, atol=1e-4)
    np.testing.assert_allclose(feats[-1], conv_by_hand(feats[-2], n_layers + 1, 1), atol=1e-5)


def test_multiscale_discriminator(tiny_d):
    model, params, x = tiny_d
    out = model.apply({"params": params}, x)
    assert len(out) == 2 and all(len(s) == 5 for s in out)
    assert [f.shape[1] for f in out[0]] == patch_sizes(32, 3)
    assert [f.shape[1] for f in out[1]] == patch_sizes(16, 3)
    # Independent params per scale, and scale 1 is the single D on the pooled input.
    assert set(params) == {"scale_0", "scale_1"}
    assert not np.allclose(params["scale_0"]["conv_0"]["kernel"], params["scale_1"]["conv_0"]["kernel"])
    single = NLayerDiscriminator(ndf=8, n_layers=3)
    for got, want in zip(out[1], single.apply({"params": params["scale_1"]}, downsample(x))):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for got, want in zip(out[0], single.apply({"params": params["scale_0"]}, x)):
        np.testing.assert_allclose(got, want, atol=1e-6)

    def loss(p):
        return sum(jnp.mean(jnp.square(s[-1] - 1.0)) for s in model.apply({"params": p}, x))

    grads = jax.jit(jax.grad(loss))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert all(float(jnp.max(jnp.abs(grads[s]["conv_0"]["kernel"]))) > 0 for s in params)
    jitted = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), jitted, out)


def test_discriminator_bfloat16_compute_close_to_float32(tiny_d):
    model, params, x = tiny_d
    bf = MultiscaleDiscriminator(**TINY_D, dtype=jnp.bfloat16)
    out32 = model.apply({"params": params}, x)
    out16 = bf.apply({"params": params}, x)
    for s32, s16 in zip(out32, out16):
        for a, b in zip(s32, s16):
            assert b.dtype == jnp.bfloat16
            err = np.abs(np.asarray(b, np.float32) - np.asarray(a))
            assert err.mean() < 0.03 * (np.abs(np.asarray(a)).mean() + 1e-3), err.mean()


# ---- paper-size parameter counts ----------------------------------------------------------------

def conv_params(k, cin, cout, bias=True):
    """Kernel plus bias; convs followed by InstanceNorm have no bias (it would be a dead parameter)."""
    return k * k * cin * cout + (cout if bias else 0)


def test_paper_generator_param_count():
    """GlobalGenerator(ngf=64, n_downsampling=4, n_blocks=9) on stick figure + previous frame (6 channels)."""
    shapes = jax.eval_shape(GlobalGenerator(ngf=64, n_downsampling=4, n_blocks=9).init,
                            jax.random.key(0), jax.ShapeDtypeStruct((1, 512, 1024, 6), jnp.float32))
    ngf, n = 64, 4
    expected = (conv_params(7, 6, ngf, bias=False)
                + sum(conv_params(3, ngf * 2 ** i, ngf * 2 ** (i + 1), bias=False) for i in range(n))
                + 9 * 2 * conv_params(3, ngf * 2 ** n, ngf * 2 ** n, bias=False)
                + sum(conv_params(3, ngf * 2 ** (n - i), ngf * 2 ** (n - i - 1), bias=False) for i in range(n))
                + conv_params(7, ngf, 3))
    assert expected == 182_431_299
    assert param_count(shapes) == expected


@pytest.mark.parametrize("num_d", [2, 3])
def test_paper_discriminator_param_count(num_d):
    """MultiscaleDiscriminator(ndf=64, n_layers=3) on (x_{t-1}, x_t, y_{t-1}, y_t): 12 channels."""
    shapes = jax.eval_shape(MultiscaleDiscriminator(num_d=num_d, ndf=64, n_layers=3).init,
                            jax.random.key(0), jax.ShapeDtypeStruct((1, 512, 1024, 12), jnp.float32))
    channels = [12, 64, 128, 256, 512, 1]
    normed = [False, True, True, True, False]  # the first and the last conv have no InstanceNorm after them
    single = sum(conv_params(4, cin, cout, bias=not norm) for cin, cout, norm in zip(channels, channels[1:], normed))
    assert single == 2_773_057
    assert param_count(shapes) == num_d * single
