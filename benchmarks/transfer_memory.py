"""Transfer memory in video length: peak RSS of transferring a short and a 10x longer source.

Trains a tiny model (once, 64x64, into --model_dir), then runs transfer mode in a fresh
subprocess per length (each has its own peak) on a synthetic source at --source_size with a
side-by-side video, so the source frames, stick figures, outputs and both encoders are all in
the loop. Flat memory means the ratio stays near 1. Prints one JSON object. Run from the
repository root:

  .venv/bin/python -m benchmarks.transfer_memory                  # 200 vs 2000 frames
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GLOG_minloglevel", "2")

from absl import app, flags  # noqa: E402

_FRAMES = flags.DEFINE_list("frames", ["200", "2000"], "Source lengths to compare (frames).")
_MODEL_DIR = flags.DEFINE_string("model_dir", "", "Trained tiny model (trained here when empty or missing).")
_SOURCE_SIZE = flags.DEFINE_integer("source_size", 256, "Synthetic source frame side (px).")
_SIDE_BY_SIDE = flags.DEFINE_bool("side_by_side", True, "Also write the side-by-side video.")
_CHILD = flags.DEFINE_integer("child_frames", 0, "Internal: run one transfer of this many frames and report.")
_OUT = flags.DEFINE_string("out", "", "Internal: the child's output directory.")
_TRAIN = flags.DEFINE_bool("train_only", False, "Internal: train the tiny model into --model_dir and exit.")

SIZE = 64


def tiny_config():
    """configs/tiny.py with the face stage at 64x64, one 1-layer discriminator, one step per stage, batch 1."""
    from configs import tiny

    config = tiny.get_config()
    config.train.stages = "global,face"
    config.model.n_layers_d, config.model.num_d = 1, 1
    config.loss.lambda_l1 = 10.0
    config.train.height = config.train.width = SIZE
    config.train.batch_size = 1
    config.train.num_steps, config.train.decay_steps = 1, 0
    config.train.face.num_steps, config.train.face.decay_steps, config.train.face.d_alone_steps = 1, 0, 1
    config.train.evaluate_holdout = False
    return config


def _rss_mib() -> float:
    """This process's resident set now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class _RssSampler(threading.Thread):
    """The largest resident set seen while running (sampled every 20 ms)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.start_mib = self.max_mib = _rss_mib()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.max_mib = max(self.max_mib, _rss_mib())

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.max_mib = max(self.max_mib, _rss_mib())


def child(frames: int, model_dir: str, out: str) -> None:
    import jax  # noqa: F401 - imported (and its memory counted) before the sampling starts

    from edn_jax.transfer import rendering

    config = tiny_config()
    config.mode = "transfer"
    config.transfer.model_workdir = model_dir
    config.transfer.synthetic_frames = frames
    config.transfer.side_by_side = _SIDE_BY_SIDE.value
    config.synthetic.height = config.synthetic.width = _SOURCE_SIZE.value  # the source; the target is 64x64
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    (result,) = rendering.run_transfer_mode(config, out)
    seconds = time.perf_counter() - t0
    sampler.stop()
    print("RESULT " + json.dumps({"frames": result.frames, "seconds": round(seconds, 2),
                                  "frames_per_s": round(result.frames / seconds, 2),
                                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                                  "rss_before_transfer_mib": round(sampler.start_mib, 1),
                                  "rss_max_during_transfer_mib": round(sampler.max_mib, 1),
                                  "rss_growth_during_transfer_mib": round(sampler.max_mib - sampler.start_mib, 1),
                                  "output_bytes": sum(os.path.getsize(p) for p in result.outputs.values())}))


def main(argv) -> None:
    del argv
    if _TRAIN.value:
        from edn_jax.training import train

        train.train_and_evaluate(tiny_config(), _MODEL_DIR.value)
        return
    if _CHILD.value:
        child(_CHILD.value, _MODEL_DIR.value, _OUT.value)
        return
    # Everything heavy runs in children: Linux carries a parent's peak RSS over into its children's
    # ru_maxrss, so this process stays small.
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = _MODEL_DIR.value or os.path.join(scratch, "model")
        if not os.path.exists(os.path.join(model_dir, "train_summary.json")):
            subprocess.run([sys.executable, "-m", "benchmarks.transfer_memory", "--train_only",
                            f"--model_dir={model_dir}"], check=True, stdout=subprocess.DEVNULL)
        runs = {}
        for frames in (int(f) for f in _FRAMES.value):
            out = os.path.join(scratch, f"out_{frames}")
            proc = subprocess.run([sys.executable, "-m", "benchmarks.transfer_memory", f"--child_frames={frames}",
                                   f"--model_dir={model_dir}", f"--out={out}", f"--source_size={_SOURCE_SIZE.value}",
                                   f"--side_by_side={_SIDE_BY_SIDE.value}"],
                                  capture_output=True, text=True, check=False)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                sys.exit(f"transfer of {frames} frames failed:\n{proc.stderr[-3000:]}")
            runs[str(frames)] = json.loads(lines[-1][len("RESULT "):])
    short, long = (runs[str(int(f))] for f in (_FRAMES.value[0], _FRAMES.value[-1]))
    print(json.dumps({
        "benchmark": "transfer_memory", "model": f"tiny global+face, {SIZE}x{SIZE}",
        "source": f"synthetic {_SOURCE_SIZE.value}x{_SOURCE_SIZE.value}", "side_by_side": _SIDE_BY_SIDE.value,
        "cpu_count": os.cpu_count(), "runs": runs,
        "peak_rss_ratio": round(long["peak_rss_mib"] / short["peak_rss_mib"], 3),
        "rss_growth_during_transfer_mib": [short["rss_growth_during_transfer_mib"],
                                           long["rss_growth_during_transfer_mib"]],
        "frames_ratio": round(long["frames"] / short["frames"], 1),
        # What holding every source frame of the long run in memory would add:
        "all_source_frames_mib": round(long["frames"] * _SOURCE_SIZE.value ** 2 * 3 / 2 ** 20, 1),
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
