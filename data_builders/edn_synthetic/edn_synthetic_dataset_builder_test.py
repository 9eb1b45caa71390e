"""TFDS harness test of edn_synthetic: builds a tiny config and checks split sizes and features."""

import numpy as np

from data_builders import harness
from data_builders.edn_synthetic import edn_synthetic_dataset_builder as builder_module
from edn_jax import synthetic
from edn_jax.data import dataset
from edn_jax.pose import render

TINY = builder_module.PoseFramesConfig(name="tiny", height=64, width=64, synthetic_seeds=(0, 1),
                                       synthetic_frames=20)


class EdnSyntheticTest(harness.PoseFramesBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [TINY]
    SPLITS = {"train": 32, "validation": 8}  # two videos of 20 frames, the last 20% of each held out


def test_synthetic_records_are_the_exact_subject(tmp_path):
    b = builder_module.Builder(data_dir=str(tmp_path), config=TINY)
    b.download_and_prepare()
    val = dataset.open_split(str(b.data_dir), "validation")
    exact = synthetic.synthetic_keypoints(1, 20, 64, 64, 30.0)
    records = [val.source[i] for i in range(len(val.source))]
    assert [(r["video_id"], r["frame_index"]) for r in records] == [(v, t) for v in (0, 1) for t in range(16, 20)]
    for r in records[4:]:  # video 1 = seed 1
        np.testing.assert_array_equal(r["keypoints"], exact[r["frame_index"]])
        np.testing.assert_array_equal(r["frame"], synthetic.render_synthetic_frame(exact[r["frame_index"]], 64, 64))
        box, valid = render.face_box(exact[r["frame_index"]], 64, 64)
        assert r["face_valid"] == valid and np.array_equal(r["face_box"], box)
    assert val.metadata["videos"][1]["name"] == "synthetic_seed1"
