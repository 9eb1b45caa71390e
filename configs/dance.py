"""Your own dance video in one command: the target's video and a dancer's video in, the dance video out.

  python -m edn_jax.main --config configs/dance.py --workdir runs/me \
      --config.dance.target=../shared/data/single_person_cam01.mp4 \
      --config.dance.source=../shared/data/two_people_cam01.mp4,../shared/data/single_person_cam02.mp4

It runs the phases in turn (edn_jax.dance): pose on the target, the dataset, training, the held-out
evaluation, transfer of every source with its side-by-side, and the results page
runs/me/report/index.html. The dance videos are in runs/me/videos. Stopped (Ctrl-C, kill -9, a
preempted machine), the same command continues where it stopped.

The recipe is configs/real_cpu.py's, the one measured to generalise from little footage, at a frame
size whose longer side is dance.long_side (192) in the target's displayed aspect; training takes
dance.train_minutes (27) whatever the machine, its steps set from the step rate measured after
compilation. The face stage runs when the target's face is seen in at least half the frames. Defaults:
about 30 minutes on 2 CPU cores for a 100-frame target and two 100-frame sources. On an accelerator,
give more: --config.dance.long_side=512 --config.dance.train_minutes=240.

The source may be one video, several (comma-separated), a glob or @FILE, as in configs/transfer.py.
"""

from configs import real_cpu


def get_config():
    config = real_cpu.get_config()
    config.mode = "dance"
    config.train.stages = "global,face"     # the face stage is dropped when the target's face is not seen
    config.pose.write_json = False          # the keypoints file is what the dataset reads
    config.dance.long_side = 192
    config.dance.train_minutes = 27.0
    return config
