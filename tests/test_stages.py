"""The stage plan, the checks on training values, what a checkpoint records of the model (signature
and training record), and rebuilding a config from that record."""

import pytest

from helpers import tiny_config
from configs import default
from edn_jax import main, stages
from edn_jax.errors import EdnError
from edn_jax.models import checks

SIZE = 32


def test_plan_stages_sizes_steps_and_order():
    config = tiny_config("global,local,face", steps=2)
    config.train.height, config.train.width = 256, 512
    planned = stages.plan_stages(config)
    assert [(s.name, s.height, s.width, s.generator) for s in planned] == [
        ("global", 256, 512, "global"), ("local", 512, 1024, "local"), ("face", 512, 1024, "local")]
    assert [s.previous.name if s.previous else None for s in planned] == [None, "global", "local"]
    assert planned[2].title == "stage 3/3 (face, 512x1024)"
    face_only = stages.plan_stages(tiny_config("global,face", steps=2))
    assert [(s.name, s.height, s.generator) for s in face_only] == [("global", SIZE, "global"), ("face", SIZE, "global")]
    assert stages.face_crop_side(default.get_config(), 512, 1024) == 128


def test_the_local_stage_trains_all_of_its_generator_from_the_first_step_by_default():
    """The paper trains the LocalEnhancer jointly at once (pix2pixHD's niter_fix_global = 0); the frozen
    phase is an option (its behaviour: test_generator_stage.py)."""
    config = default.get_config()
    assert config.train.local.fix_global_steps == 0
    checks.validate_train_config(config, check_batch=False)


@pytest.mark.parametrize("field,value,fragment", [
    ("train.stages", "local,global", "out of order"), ("train.stages", "global,global", "out of order"),
    ("train.stages", "face", "out of order"), ("train.stages", "global,hands", "hands is not a stage"),
    ("train.stages", " ", "names no known stage"), ("model.local_ngf", 8, r"must be 2 \* model.local_ngf"),
    ("train.local.fix_global_steps", 5, "fix_global_steps"), ("train.face.d_alone_steps", 3, "d_alone_steps"),
    ("train.face.num_steps", 0, "train.face.num_steps"), ("model.face_crop", 12, "face_crop"),
    ("model.num_d_local", 0, "num_d_local"), ("model.face_d_norm", "group", "face_d_norm"),
    ("model.face_prev", "blank", "face_prev"), ("loss.vgg_input", "caffe", "vgg_input"),
    ("loss.global_vgg_scale", -1.0, "global_vgg_scale"), ("train.local.num_epochs", -1.0, "num_epochs"),
    ("train.face.decay_epochs", 3.0, "decay_epochs=3.0 exceeds train.face.num_epochs"),
])
def test_bad_stage_values(tmp_path, field, value, fragment):
    config = tiny_config("global,local,face", steps=2)
    *path, name = field.split(".")
    section = config
    for part in path:
        section = section[part]
    section[name] = value
    with pytest.raises(EdnError, match=fragment):
        main.run(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("field,value,fragment", [
    ("model.ngf", 0, "ngf"), ("model.num_d", 0, "num_d"), ("train.learning_rate", -1.0, "learning_rate"),
    ("train.batch_size", 6, "does not split over 8 devices"), ("train.height", 30, r"not divisible by 2\^n_downsampling"),
    ("train.decay_steps", 10, "decay_steps"), ("loss.perceptual", "vgg11", "perceptual"), ("model.dtype", "fp8", "dtype"),
    ("model.temporal", False, "use_prev_label=True needs model.temporal=True"),
    ("train.remat", "some", "train.remat='some' is not known"),
    ("model.exemplar_warp", "mesh", "model.exemplar_warp='mesh' is not known.*none, limbs"),
    ("model.exemplar_warp", "limbs", "model.exemplar_warp='limbs' needs an exemplar"),
    ("loss.perceptual", "vgg19", "loss.perceptual=vgg19 has no weights: no vgg19 weights file given.*perceptual=none"),
])
def test_bad_training_values(tmp_path, field, value, fragment):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    config.model.use_prev_label = name == "temporal"
    with pytest.raises(EdnError, match=fragment):
        main.run(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_paper_parameter_counts_per_stage():
    """The paper config's networks, counted from shapes (tools/param_counts.py prints the same):
    a 2-scale D in the global stage, 3 scales in the local and face stages (2,773,057 each), the
    BatchNorm face D (its InstanceNorm form has 2,766,913)."""
    from configs import paper
    from tools import param_counts

    expected = {
        "global": {"size": [256, 512], "generator": 182_431_299, "discriminator": 5_546_114, "discriminator_scales": 2},
        "local": {"size": [512, 1024], "generator": 182_694_051, "discriminator": 8_319_171, "discriminator_scales": 3},
        "face": {"crop": 128, "face_generator": 26_717_763, "face_discriminator": 2_768_705,
                 "face_discriminator_norm": "batch", "discriminator": 8_319_171, "discriminator_scales": 3},
    }
    assert param_counts.count(default.get_config()) == expected
    assert param_counts.count(paper.get_config()) == expected


def test_stage_lengths_in_epochs_become_steps_for_the_dataset():
    """configs/paper.py gives the paper's 5 / 30 / 5 epochs; they become steps from the number of
    training pairs and the batch when the dataset is opened (lengths in steps are kept)."""
    from configs import paper
    from edn_jax.training import train

    config = paper.get_config()
    resolved = stages.resolve_epochs(config, num_pairs=1000)
    t = resolved.train
    assert (t.num_steps, t.decay_steps, t.local.num_steps, t.local.decay_steps) == (5000, 2500, 30_000, 15_000)
    assert (t.face.num_steps, t.face.decay_steps, t.face.d_alone_steps) == (5000, 2500, 250)
    assert config.train.num_steps == 100_000  # the config itself is not changed
    config.train.batch_size = 4
    assert stages.resolve_epochs(config, num_pairs=999).train.num_steps == 1249  # ceil(5 * 999 / 4)
    assert stages.epochs_to_steps(2.0, 10, 4) == 5 and stages.epochs_to_steps(1.0, 8, 4) == 2
    in_steps = tiny_config()
    assert stages.resolve_epochs(in_steps, 1000).train.to_dict() == in_steps.train.to_dict()

    class Split:  # what train.steps_from_epochs reads of an opened split: 2 videos of 6 and 5 frames
        source, video_ids, frame_indices = [None] * 11, [0] * 6 + [1] * 5, list(range(6)) + list(range(5))

    tiny = tiny_config()
    tiny.train.num_epochs, tiny.train.decay_epochs, tiny.train.batch_size = 3.0, 1.0, 8
    converted = train.steps_from_epochs(tiny, Split())
    assert (converted.train.num_steps, converted.train.decay_steps) == (4, 2)  # 9 pairs: ceil(27/8), ceil(9/8)


def test_the_paper_config_is_the_papers_recipe(tmp_path):
    from configs import paper

    config = paper.get_config()
    m, t, loss = config.model, config.train, config.loss
    assert config.mode == "train" and t.stages == "global,local,face"
    assert (m.num_d, m.num_d_local, m.num_d_face, m.face_d_norm, m.face_prev) == (2, 3, 3, "batch", "refined")
    assert (loss.perceptual, loss.vgg_input, loss.global_vgg_scale, loss.lambda_l1) == ("vgg19", "pix2pixhd", 0.5, 0)
    assert (t.local.fix_global_steps, t.batch_size, (config.build.height, config.build.width)) == (0, 1, (512, 1024))
    # VGG19's weights ship with nothing: the run stops before any work, in one line saying how to get them.
    with pytest.raises(EdnError, match="no vgg19 weights file given.*convert_vgg19"):
        main.run(config, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["demo", "real_cpu", "ablation", "paper", "cpu"])
def test_small_footage_recipe_is_on_where_measured_and_off_in_the_papers_method(name):
    """demo and real_cpu train with docs/results.md's recipe; the paper's config and its ablation
    keep the paper's method (no plate, no augmentation, no previous-frame noise)."""
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config()
    checks.validate_train_config(config, check_batch=False)
    aug, recipe = config.train.augment, name in ("demo", "real_cpu")
    assert (config.model.background == "composite") == recipe
    assert (min(aug.scale, aug.rotate, aug.shift, aug.flip) > 0) == recipe
    assert (max(aug.scale, aug.rotate, aug.shift, aug.flip) == 0) == (not recipe)
    assert (config.train.prev_noise > 0) == recipe
    assert (config.model.exemplar == "copy") == recipe
    assert (config.model.exemplar_warp == "limbs") == recipe
    assert (config.model.composite_region > 0) == recipe


def test_bad_small_footage_fields_are_one_error_each():
    for field, value, fragment in (("model.background", "plate", "model.background"),
                                   ("model.plate_fill", "mean", "model.plate_fill"),
                                   ("model.composite_region", 0.1, "model.composite_region"),
                                   ("train.augment.flip", 2.0, "train.augment.flip"),
                                   ("train.prev_noise", -0.1, "train.prev_noise")):
        config = tiny_config("global", steps=2)
        section, key = field.rsplit(".", 1)
        target = config
        for part in section.split("."):
            target = target[part]
        target[key] = value
        with pytest.raises(EdnError, match=fragment):
            checks.validate_train_config(config, check_batch=False)


def test_signatures_and_records_from_before_per_stage_discriminators_still_match():
    """A local or face stage checkpointed before num_d_local / num_d_face / face_d_norm existed had
    one D for every stage and an InstanceNorm face D; its stored signature is read that way."""
    config = tiny_config("global,local,face", steps=2)
    config.model.num_d_local = config.model.num_d_face = config.model.num_d
    config.model.face_d_norm = "instance"
    for stage in stages.plan_stages(config):
        current = stages.model_signature(config, stage)
        old_model = {k: v for k, v in current["model"].items() if k not in ("num_d_local", "num_d_face", "face_d_norm")}
        assert stages.upgraded_signature(dict(current, model=old_model)) == current
        assert stages.upgraded_signature(current) == current
    paper_defaults = stages.model_signature(default.get_config(), stages.plan_stages(default.get_config())[2])
    old = dict(paper_defaults, model={k: v for k, v in paper_defaults["model"].items()
                                      if k not in ("num_d_face", "face_d_norm")})
    assert stages.upgraded_signature(old) != paper_defaults  # an old face model is not today's default one
    filled = stages.with_legacy_values({"model.num_d": 1, "model.ngf": 8, "model.face_prev": "refined"})
    assert filled["model.num_d_local"] == filled["model.num_d_face"] == 1
    assert (filled["model.face_prev"], filled["model.face_d_norm"], filled["loss.vgg_input"]) == (
        "refined", "instance", "imagenet")


# The model fields of the first checkpoints: a field added since is read from an older record with
# the value those models had (LEGACY_VALUES or LEGACY_COPIES), or an older model would load as a new one.
FIRST_RECORD_MODEL_FIELDS = {"dtype", "face_crop", "face_n_blocks", "face_n_downsampling", "face_n_layers_d", "face_ndf",
                             "face_ngf", "local_ngf", "n_blocks", "n_blocks_local", "n_downsampling", "n_layers_d", "ndf",
                             "ngf", "num_d", "temporal", "use_prev_label"}
# Model fields outside every signature: the compute dtype (free at inference), the face crop (the
# signature holds the side it gives) and what the face stage is fed as the previous frame in training.
UNSIGNED_MODEL_FIELDS = {"dtype", "face_crop", "face_prev"}


def test_a_new_model_field_is_in_a_signature_and_has_a_value_for_older_records():
    fields = set(default.get_config().model)
    signed = {name for group in (stages.SIGNATURE_FIELDS, stages.STAGE_SIGNATURE_FIELDS)
              for names in group.values() for name in names}
    assert fields - signed == UNSIGNED_MODEL_FIELDS, "put the new field in stages.SIGNATURE_FIELDS (or say here why not)"
    legacy = {key.split(".", 1)[1] for key in [*stages.LEGACY_VALUES, *stages.LEGACY_COPIES] if key.startswith("model.")}
    assert fields - legacy == FIRST_RECORD_MODEL_FIELDS, "give the new field its old behaviour in stages.LEGACY_VALUES"
    # and an older record (without the added fields) reads back with those values
    record = {f"model.{k}": v for k, v in default.get_config().model.items() if k in FIRST_RECORD_MODEL_FIELDS}
    read = {k for k in stages.with_legacy_values(record) if k.startswith("model.")}
    assert read == {f"model.{k}" for k in fields}
