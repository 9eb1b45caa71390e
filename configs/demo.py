"""The demo: the whole pipeline on the built-in synthetic subject, on a laptop CPU.

  ./launch.sh demo
  # same as: python -m edn_jax.main --config configs/demo.py --workdir runs/demo
"""

from configs import default


def get_config():
    config = default.get_config()
    config.mode = "pose"
    config.overwrite = True  # the demo regenerates its own outputs on every run
    config.synthetic.num_frames = 180
    config.synthetic.height = 256
    config.synthetic.width = 256
    config.pose.output_height = 256
    return config
