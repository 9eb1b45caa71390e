"""pix2pixHD losses: hand-computed values, gradients, and the pretrained VGG behind the perceptual loss."""

import importlib.util
import pathlib
import pickle

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_facts
from edn_jax.errors import EdnError
from edn_jax.models import vgg
from edn_jax.training import losses

REPO = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("convert_vgg19", REPO / "tools" / "convert_vgg19.py")
convert_vgg19 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_vgg19)

LPIPS_SHIFT = jnp.array([-0.030, -0.088, -0.188])  # lpips_jax.lpips.LPIPS's input scaling
LPIPS_SCALE = jnp.array([0.458, 0.448, 0.450])


def const(value, shape=(1, 4, 4, 1), dtype=jnp.float32):
    return jnp.full(shape, value, dtype)


def d_outputs(preds, junk=7.0):
    """Multiscale D output with a junk intermediate map per scale (the losses must use only the last)."""
    return [[const(junk, (1, 8, 8, 2)), const(p)] for p in preds]


# ---------------------------------------------------------------- LSGAN


def test_lsgan_hand_computed_two_scales():
    real, fake = d_outputs([0.5, 2.0]), d_outputs([0.25, -1.0])
    # 0.5 * ((0.5-1)^2 + (2-1)^2 + 0.25^2 + (-1)^2)
    assert float(jax.jit(losses.lsgan_d_loss)(real, fake)) == pytest.approx(0.5 * (0.25 + 1.0 + 0.0625 + 1.0))
    # (0.25-1)^2 + (-1-1)^2
    assert float(jax.jit(losses.lsgan_g_loss)(fake)) == pytest.approx(0.5625 + 4.0)


def test_lsgan_zero_at_targets_and_float32_from_bfloat16():
    assert float(losses.lsgan_d_loss(d_outputs([1.0, 1.0]), d_outputs([0.0, 0.0]))) == 0.0
    assert float(losses.lsgan_g_loss(d_outputs([1.0, 1.0]))) == 0.0
    fake = [[const(0.3, dtype=jnp.bfloat16)], [const(1.5, dtype=jnp.bfloat16)]]
    loss = losses.lsgan_g_loss(fake)
    assert loss.dtype == jnp.float32
    assert float(loss) == pytest.approx((0.30078125 - 1) ** 2 + 0.25)  # bf16(0.3) = 0.30078125


def test_lsgan_g_gradient_pushes_fake_toward_one():
    fake = d_outputs([0.25, 3.0])
    grads = jax.grad(losses.lsgan_g_loss)(fake)
    assert float(jnp.max(grads[0][1])) < 0  # below 1: descent raises it
    assert float(jnp.min(grads[1][1])) > 0  # above 1: descent lowers it
    np.testing.assert_allclose(grads[0][1], 2 * (0.25 - 1) / 16)  # d mean((p-1)^2)/dp over 16 cells
    assert float(jnp.abs(grads[0][0]).max()) == 0.0  # intermediate maps play no part


# ---------------------------------------------------------------- feature matching


def fm_outputs(values, pred):
    """One scale: three intermediate maps of different shapes (n_layers = 2), then the prediction."""
    shapes = [(1, 8, 8, 4), (1, 4, 4, 8), (1, 2, 2, 16)]
    return [const(v, s) for v, s in zip(values, shapes)] + [const(pred)]


def test_feature_matching_hand_computed():
    real = [fm_outputs([0.0, 0.0, 0.0], 0.0), fm_outputs([1.0, 1.0, 1.0], 0.0)]
    fake = [fm_outputs([1.0, -2.0, 3.0], 100.0), fm_outputs([1.5, 0.5, 2.0], -100.0)]  # predictions ignored
    # d_weight = 1/num_D = 1/2, feat_weight = 4/(n_layers+1) = 4/3, lambda_feat = 10
    l1 = (1 + 2 + 3) + (0.5 + 0.5 + 1)
    assert float(jax.jit(losses.feature_matching_loss)(real, fake)) == pytest.approx(0.5 * 4 / 3 * 10 * l1, rel=1e-6)
    assert float(losses.feature_matching_loss(real, fake, lambda_feat=1.0)) == pytest.approx(0.5 * 4 / 3 * l1, rel=1e-6)
    # one scale with one intermediate map (n_layers = 0): weights 1 and 4
    one = losses.feature_matching_loss([[const(0.0), const(0.0)]], [[const(0.5), const(9.0)]], lambda_feat=1.0)
    assert float(one) == pytest.approx(4 * 0.5)


def test_feature_matching_zero_when_equal_and_no_gradient_to_real():
    real = [fm_outputs([0.1, 0.2, 0.3], 0.0), fm_outputs([0.4, 0.5, 0.6], 0.0)]
    assert float(losses.feature_matching_loss(real, real)) == 0.0
    fake = [fm_outputs([1.0, 1.0, 1.0], 0.0), fm_outputs([0.0, 0.0, 0.0], 0.0)]
    g_real, g_fake = jax.grad(losses.feature_matching_loss, argnums=(0, 1))(real, fake)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_real))
    assert float(g_fake[0][0].min()) > 0 and float(g_fake[1][0].max()) < 0  # pulled toward real
    np.testing.assert_allclose(g_fake[0][0], 0.5 * 4 / 3 * 10 / g_fake[0][0].size, rtol=1e-6)
    assert float(jnp.abs(g_fake[0][-1]).max()) == 0.0


# ---------------------------------------------------------------- VGG16 from lpips_jax


@pytest.fixture(scope="module")
def vgg16_params():
    return vgg.load_vgg_params("vgg16")


@pytest.fixture(scope="module")
def images():
    """Smooth random images (upsampled 4x4 noise) in [-1, 1], 32x32."""
    low = jax.random.uniform(jax.random.key(1), (2, 4, 4, 3), minval=-0.8, maxval=0.8)
    return jax.image.resize(low, (2, 32, 32, 3), "linear")


def test_vgg16_matches_lpips_jax_and_holds_the_pickled_weights(vgg16_params):
    from lpips_jax.models import VGG16

    with open(vgg.lpips_vgg16_path(), "rb") as f:
        raw = pickle.load(f)["VGG16_0"]
    np.testing.assert_array_equal(vgg16_params["conv1_1"]["kernel"], raw["Conv_0"]["kernel"])
    np.testing.assert_array_equal(vgg16_params["conv5_3"]["bias"], raw["Conv_12"]["bias"])

    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    ref = VGG16().apply({"params": raw}, (x - LPIPS_SHIFT) / LPIPS_SCALE)
    ours = vgg.VGG("vgg16", vgg.LPIPS_VGG16_LAYERS).apply({"params": vgg16_params}, x)
    for a, b in zip(ref, ours, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # pix2pixHD's layers (the default) are relu1_1 ... relu5_1 at the same five resolutions
    feats = vgg.VGG("vgg16").apply({"params": vgg16_params}, x)
    assert [f.shape for f in feats] == [(2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 4, 4, 512), (2, 2, 2, 512)]


@pytest.mark.parametrize("kind", ["random", "ties", "relu_zeros", "constant"])
def test_vgg_max_pool_equals_flax_max_pool_with_its_gradient(kind):
    """VGG's 2x2 max pool (a custom VJP, faster on CPU) gives nn.max_pool's output and gradient bit for bit,
    ties included (the gradient goes to the first maximum in the window, as select-and-scatter's)."""
    import flax.linen as nn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 10, 3)).astype(np.float32)  # odd height: the last row is dropped
    x = {"random": x, "ties": np.round(x * 2) / 2, "relu_zeros": np.maximum(np.round(x * 2) / 2, 0),
         "constant": np.ones_like(x)}[kind]
    want, want_vjp = jax.vjp(lambda a: nn.max_pool(a, (2, 2), strides=(2, 2)), jnp.asarray(x))
    got, got_vjp = jax.vjp(vgg.max_pool_2x2, jnp.asarray(x))
    g = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_vjp(g)[0], want_vjp(g)[0])


def test_vgg_normalizes_minus_one_one_to_imagenet_statistics():
    rgb01 = jax.random.uniform(jax.random.key(2), (1, 2, 2, 3))
    expected = (rgb01 - jnp.array(vgg.IMAGENET_MEAN)) / jnp.array(vgg.IMAGENET_STD)
    np.testing.assert_allclose(vgg.normalize(rgb01 * 2 - 1), expected, rtol=1e-5, atol=1e-5)


def test_perceptual_loss_zero_on_itself_and_grows_with_noise(vgg16_params, images):
    loss = losses.make_perceptual_loss("vgg16")
    assert isinstance(loss, losses.PerceptualLoss)
    np.testing.assert_array_equal(loss.params["conv1_1"]["kernel"], vgg16_params["conv1_1"]["kernel"])
    jitted = jax.jit(lambda l, x, y: l(x, y))  # the loss is a pytree argument, not baked-in constants
    assert float(jitted(loss, images, images)) == 0.0
    noise = jax.random.normal(jax.random.key(3), images.shape)
    values = [float(jitted(loss, jnp.clip(images + s * noise, -1, 1), images)) for s in (0.05, 0.2, 0.5)]
    assert 0 < values[0] < values[1] < values[2], values
    # the functional form gives the same number: VGG on the [-1, 1] images as they are (pix2pixHD's input)
    noisy = jnp.clip(images + 0.2 * noise, -1, 1)
    same = losses.perceptual_loss(vgg.apply_fn("vgg16", imagenet_input=False), vgg16_params, noisy, images)
    assert float(same) == pytest.approx(values[1], rel=1e-5)
    # loss.vgg_input="imagenet": mapped to the ImageNet statistics first, a different number
    imagenet = losses.make_perceptual_loss("vgg16", imagenet_input=True)
    normalised = losses.perceptual_loss(vgg.apply_fn("vgg16", imagenet_input=True), vgg16_params, noisy, images)
    assert float(jitted(imagenet, noisy, images)) == pytest.approx(float(normalised), rel=1e-5)
    assert float(normalised) != pytest.approx(values[1], rel=0.05)

    random = vgg.VGG("vgg16").init(jax.random.key(4), images)["params"]
    assert float(random["conv1_1"]["kernel"][0, 0, 0, 0]) != float(vgg16_params["conv1_1"]["kernel"][0, 0, 0, 0])
    random_value = float(losses.perceptual_loss(vgg.apply_fn("vgg16", imagenet_input=False), random, noisy, images))
    assert random_value != pytest.approx(values[1], rel=0.05)


def test_perceptual_loss_gradient_reaches_x_only(vgg16_params, images):
    y = images[:, ::-1]  # a different image
    gx, gy = jax.jit(jax.grad(lambda x, y, p: losses.perceptual_loss(vgg.apply_fn("vgg16"), p, x, y),
                              argnums=(0, 1)))(images, y, vgg16_params)
    assert float(jnp.abs(gx).max()) > 0
    assert float(jnp.abs(gy).max()) == 0.0
    bf16 = jax.jit(lambda x, y, p: losses.perceptual_loss(vgg.apply_fn("vgg16", dtype=jnp.bfloat16), p, x, y))
    assert bf16(images, y, vgg16_params).dtype == jnp.float32


def test_perceptual_loss_runs_vgg_in_the_models_dtype(images):
    """A bfloat16 model's perceptual term runs VGG in bfloat16 (its convs are most of a step's work),
    with float32 weights and a float32 loss near the float32 one."""
    y = images[:, ::-1]
    f32, bf16 = (losses.make_perceptual_loss("vgg16", dtype=d) for d in ("float32", "bfloat16"))
    assert (f32.dtype, bf16.dtype) == ("float32", "bfloat16")
    assert bf16.params["conv1_1"]["kernel"].dtype == jnp.float32
    value = jax.jit(lambda loss, x: loss(x, y))
    assert value(bf16, images).dtype == jnp.float32
    assert float(value(bf16, images)) == pytest.approx(float(value(f32, images)), rel=0.03)
    assert float(value(bf16, images)) != float(value(f32, images))  # computed in bfloat16, not float32
    text = str(jax.make_jaxpr(lambda x: bf16(x, y))(images))
    assert "conv_general_dilated" in text and "bf16[" in text
    assert "bf16[" not in str(jax.make_jaxpr(lambda x: f32(x, y))(images))


# ---------------------------------------------------------------- VGG19: converter and loading

TORCHVISION_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
TORCHVISION_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def random_hwio(rng, arch):
    """He-scaled random conv weights in our layout (HWIO), so deep activations stay finite."""
    return {name: {"kernel": (rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin))).astype(np.float32),
                   "bias": (0.1 * rng.standard_normal(cout)).astype(np.float32)}
            for name, cin, cout, _ in vgg.conv_layers(arch)}


@pytest.fixture(scope="module")
def vgg19_weights(tmp_path_factory):
    """Synthetic VGG19 weights (torch-style OIHW state dict, a Keras .h5) and their conversions to .npz."""
    rng = np.random.default_rng(0)
    tmp = tmp_path_factory.mktemp("vgg19")
    torch_params = random_hwio(rng, "vgg19")
    state = {f"features.{i}.weight": torch_params[n]["kernel"].transpose(3, 2, 0, 1) for n, i in
             zip(torch_params, TORCHVISION_VGG19_CONVS)}
    state |= {f"features.{i}.bias": torch_params[n]["bias"] for n, i in zip(torch_params, TORCHVISION_VGG19_CONVS)}
    state["classifier.0.weight"] = np.zeros((2, 2), np.float32)
    torch_npz = str(tmp / "from_torch.npz")
    vgg.save_vgg_params(convert_vgg19.from_torchvision(state, "vgg19"), torch_npz)

    keras_params = random_hwio(rng, "vgg19")
    h5 = str(tmp / "vgg19_notop.h5")
    with h5py.File(h5, "w") as f:  # Keras 2 weights-only layout: layer/layer/{kernel,bias}:0
        names = ["input_1"] + [f"block{n[4]}_conv{n[6]}" for n in keras_params] + ["block1_pool"]
        f.attrs["layer_names"] = [s.encode() for s in names]
        f.create_group("input_1")
        f.create_group("block1_pool")
        for name, layer in keras_params.items():
            g = f.create_group(f"block{name[4]}_conv{name[6]}").create_group(f"block{name[4]}_conv{name[6]}")
            g["kernel:0"], g["bias:0"] = layer["kernel"], layer["bias"]
    keras_npz = str(tmp / "from_keras.npz")
    assert convert_vgg19.main(["--src", h5, "--out", keras_npz]) == 0
    return dict(state=state, torch_npz=torch_npz, keras_params=keras_params, h5=h5, keras_npz=keras_npz, tmp=tmp)


def test_torchvision_indices_follow_the_features_sequential():
    assert tuple(convert_vgg19.torchvision_indices("vgg19").values()) == TORCHVISION_VGG19_CONVS
    assert tuple(convert_vgg19.torchvision_indices("vgg16").values()) == TORCHVISION_VGG16_CONVS


def test_torch_state_dict_round_trip(vgg19_weights):
    state = vgg19_weights["state"]
    params = vgg.load_vgg_params("vgg19", vgg19_weights["torch_npz"])
    for name, index in zip(params, TORCHVISION_VGG19_CONVS, strict=True):
        np.testing.assert_array_equal(params[name]["kernel"], state[f"features.{index}.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(params[name]["bias"], state[f"features.{index}.bias"])

    x = jax.random.uniform(jax.random.key(5), (1, 32, 32, 3), minval=-1, maxval=1)
    feats = vgg.VGG("vgg19").apply({"params": params}, x)
    assert [f.shape for f in feats] == [(1, 32, 32, 64), (1, 16, 16, 128), (1, 8, 8, 256), (1, 4, 4, 512), (1, 2, 2, 512)]
    assert all(bool(jnp.isfinite(f).all()) for f in feats)
    # relu1_1 as torch computes it: NCHW input, OIHW weight, cross-correlation with padding 1
    nchw = jnp.transpose(vgg.normalize(x), (0, 3, 1, 2))
    torch_conv = jax.lax.conv_general_dilated(nchw, jnp.asarray(state["features.0.weight"]), (1, 1), ((1, 1), (1, 1)),
                                              dimension_numbers=("NCHW", "OIHW", "NCHW"))
    torch_relu = jax.nn.relu(torch_conv + state["features.0.bias"][:, None, None])
    np.testing.assert_allclose(feats[0], jnp.transpose(torch_relu, (0, 2, 3, 1)), rtol=1e-5, atol=1e-5)


def test_keras_h5_round_trip_folds_caffe_preprocessing(vgg19_weights):
    keras = vgg19_weights["keras_params"]
    params = vgg.load_vgg_params("vgg19", vgg19_weights["keras_npz"])
    for name in list(keras)[1:]:  # already HWIO: copied exactly
        np.testing.assert_array_equal(params[name]["kernel"], keras[name]["kernel"])
        np.testing.assert_array_equal(params[name]["bias"], keras[name]["bias"])

    x = jax.random.uniform(jax.random.key(6), (1, 16, 16, 3), minval=-1, maxval=1)
    ours = vgg.VGG("vgg19", ("relu1_1",)).apply({"params": params}, x)[0]
    caffe = ((x + 1) / 2)[..., ::-1] * 255 - CAFFE_MEAN_BGR  # Keras' preprocess_input(mode="caffe")
    theirs = jax.nn.relu(jax.lax.conv_general_dilated(caffe, jnp.asarray(keras["conv1_1"]["kernel"]), (1, 1), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
                         + keras["conv1_1"]["bias"])
    np.testing.assert_allclose(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ours, theirs, atol=0.05 * float(jnp.abs(theirs).max()))  # border: padding differs slightly


def test_load_errors_name_the_file(vgg19_weights, tmp_path):
    with pytest.raises(EdnError, match="no weights file given for vgg19"):
        vgg.load_vgg_params("vgg19")
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(EdnError, match=f"{missing} does not exist.*convert_vgg19"):
        vgg.load_vgg_params("vgg19", missing)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz at all")
    with pytest.raises(EdnError, match=f"{garbage} is not a readable .npz"):
        vgg.load_vgg_params("vgg19", str(garbage))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(vgg19_weights["torch_npz"], "rb").read()[:100_000])
    with pytest.raises(EdnError, match=f"{truncated} is not a readable .npz"):
        vgg.load_vgg_params("vgg19", str(truncated))
    with pytest.raises(EdnError) as caught:
        vgg.load_vgg_params("vgg16", vgg19_weights["torch_npz"])
    assert_facts(caught.value, "vgg16", "missing []", "'conv3_4'")
    with pytest.raises(EdnError, match="unknown VGG architecture 'vgg11'"):
        vgg.load_vgg_params("vgg11")


def test_converter_errors(vgg19_weights, tmp_path):
    state = dict(vgg19_weights["state"])
    del state["features.34.weight"]
    with pytest.raises(EdnError, match="lacks features.34.weight"):
        convert_vgg19.from_torchvision(state, "vgg19")
    bad_h5 = tmp_path / "bad.h5"
    bad_h5.write_bytes(b"garbage")
    with pytest.raises(EdnError, match="not a readable HDF5 file"):
        convert_vgg19.convert(str(bad_h5))
    with pytest.raises(EdnError, match="no layer block3_conv4"):  # a VGG16 file converted as VGG19
        with h5py.File(tmp_path / "vgg16.h5", "w") as f:
            for name, layer in random_hwio(np.random.default_rng(1), "vgg16").items():
                g = f.create_group(f"block{name[4]}_conv{name[6]}")
                g["kernel:0"], g["bias:0"] = layer["kernel"], layer["bias"]
        convert_vgg19.convert(str(tmp_path / "vgg16.h5"), "vgg19")
    assert convert_vgg19.main(["--src", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o.npz")]) == 2
    assert not (tmp_path / "o.npz").exists()


def test_make_perceptual_loss_is_off_only_when_disabled_and_missing_weights_are_an_error(vgg19_weights, tmp_path):
    with pytest.warns(UserWarning, match="perceptual loss off: disabled"):
        assert losses.make_perceptual_loss(enabled=False) is None
    with pytest.raises(EdnError) as caught:
        losses.make_perceptual_loss("vgg19")
    assert_facts(caught.value, "vgg19", "no weights", "convert_vgg19", "--config.loss.perceptual=none")
    missing = str(tmp_path / "vgg19.npz")
    with pytest.raises(EdnError, match=f"VGG weights file {missing} does not exist"):
        losses.make_perceptual_loss("vgg19", missing)
    garbage = tmp_path / "garbage.npz"  # a file the user pointed at that does not load is an error, not "off"
    garbage.write_bytes(b"junk")
    with pytest.raises(EdnError, match="not a readable .npz"):
        losses.make_perceptual_loss("vgg19", str(garbage))
    loss = losses.make_perceptual_loss("vgg19", vgg19_weights["torch_npz"])
    x = jnp.zeros((1, 32, 32, 3))
    assert loss.arch == "vgg19" and float(loss(x, x)) == 0.0
