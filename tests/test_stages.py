"""The stage plan, the checks on training values, what a checkpoint records of the model (signature
and training record), and rebuilding a config from that record."""

import pytest

from conftest import staged_config, tiny_config
from configs import default
from edn_jax import main, stages
from edn_jax.errors import EdnError

SIZE = 32


def test_plan_stages_sizes_steps_and_order():
    config = staged_config()
    config.train.height, config.train.width = 256, 512
    planned = stages.plan_stages(config)
    assert [(s.name, s.height, s.width, s.generator) for s in planned] == [
        ("global", 256, 512, "global"), ("local", 512, 1024, "local"), ("face", 512, 1024, "local")]
    assert [s.previous.name if s.previous else None for s in planned] == [None, "global", "local"]
    assert planned[2].title == "stage 3/3 (face, 512x1024)"
    face_only = stages.plan_stages(staged_config("global,face"))
    assert [(s.name, s.height, s.generator) for s in face_only] == [("global", SIZE, "global"), ("face", SIZE, "global")]
    assert stages.face_crop_side(default.get_config(), 512, 1024) == 128


def test_the_local_stage_trains_all_of_its_generator_from_the_first_step_by_default():
    """The paper trains the LocalEnhancer jointly at once (pix2pixHD's niter_fix_global = 0); the frozen
    phase is an option (its behaviour: test_generator_stage.py)."""
    config = default.get_config()
    assert config.train.local.fix_global_steps == 0
    stages.validate_train_config(config, check_batch=False)


@pytest.mark.parametrize("field,value,fragment", [
    ("train.stages", "local,global", "out of order"), ("train.stages", "global,global", "out of order"),
    ("train.stages", "face", "out of order"), ("train.stages", "global,hands", "hands is not a stage"),
    ("train.stages", " ", "names no known stage"), ("model.local_ngf", 8, r"must be 2 \* model.local_ngf"),
    ("train.local.fix_global_steps", 5, "fix_global_steps"), ("train.face.d_alone_steps", 3, "d_alone_steps"),
    ("train.face.num_steps", 0, "train.face.num_steps"), ("model.face_crop", 12, "face_crop"),
])
def test_bad_stage_values(tmp_path, field, value, fragment):
    config = staged_config()
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
    """The paper config's networks, counted from shapes (tools/param_counts.py prints the same)."""
    from tools import param_counts

    counts = param_counts.count(default.get_config())
    assert counts == {
        "global": {"size": [256, 512], "generator": 182_431_299, "discriminator": 5_546_114, "discriminator_scales": 2},
        "local": {"size": [512, 1024], "generator": 182_694_051, "discriminator": 5_546_114, "discriminator_scales": 2},
        "face": {"crop": 128, "face_generator": 26_717_763, "face_discriminator": 2_766_913},
    }
