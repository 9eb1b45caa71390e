"""The prepared device check: edn_jax's figures on one accelerator, in one call of under 8 minutes.

Run through ``benchmarks/device_check.sh`` (it sets the environment); ``--size tiny`` runs the same
measurements at tiny shapes on a CPU in well under a minute (``tests/test_device_check.py``):

  benchmarks/device_check.sh                  # paper sizes (configs/paper.py), on the GPU
  benchmarks/device_check.sh --size tiny      # the same code at tiny shapes, anywhere

Measurements, in this order of priority (those that do not start within ``--budget_s`` are
reported as skipped, so a slow machine still returns the most important figures):

- ``matmul``: the jitted square-matmul peak, float32 and bfloat16, the MFU denominators;
- ``train``: the train step of each stage at paper size: global 256x512 (batch 1, 4, 8), local
  512x1024 (batch 1, 4), face (512x1024, batch 1), float32 and bfloat16: images/s, peak device
  memory, the compiled step's memory and FLOPs, MFU;
- ``remat``: the compiled memory of the local stage's step (batch 4) with ``train.remat`` none /
  perceptual / full (compiled, not run);
- ``render``: sequential rendering (the compiled scan) at 512x1024 with the local generator and
  the face generator, and without the face generator (what PyTorch is compared with);
- ``torch_train`` / ``torch_render``: the same step and loop in PyTorch eager
  (``benchmarks/torch_reference.py``) on the same device, when the interpreter has torch.

Each measurement runs in its own process (so peak memory is its own); ``--jobs`` of them run at
once, compiling in parallel, while a file lock lets one process at a time use the device for
its timed part (a PyTorch run holds it throughout). VGG weights are random with the pretrained
shapes (no package ships VGG19's; speed does not depend on their values). Prints one JSON object
per line as each measurement ends, then a summary object (ratios and the issue's goals); with
``--out`` (the script passes ``$OUT``) the same lines go to ``device_check.jsonl`` there, each
written as it is printed, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK_ENV = "EDN_DEVICE_LOCK"
DTYPES = ("float32", "bfloat16")
# Per size: the global stage's (height, width), its batches, the local stage's batches, timed steps,
# rendered frames (chunk, repeats), the matmul sizes of the peak, and the loss and model fields
# that override configs/paper.py (paper: none; tiny: no VGG, whose compilation alone takes 20 s on
# two cores).
SIZES = {
    "paper": {"global": (256, 512), "global_batches": (4, 1, 8), "local_batches": (4, 1), "steps": 10,
              "frames": 48, "chunk": 16, "repeats": 3, "matmul": (2048, 4096, 8192), "loss": {}, "model": {}},
    "tiny": {"global": (32, 64), "global_batches": (2,), "local_batches": (1,), "steps": 2,
             "frames": 4, "chunk": 2, "repeats": 1, "matmul": (256, 512), "loss": {"perceptual": "none"},
             "model": {"ngf": 8, "n_downsampling": 2, "n_blocks": 1, "local_ngf": 4, "n_blocks_local": 1, "ndf": 8,
                       "n_layers_d": 2, "face_ngf": 8, "face_n_downsampling": 2, "face_n_blocks": 1, "face_ndf": 8,
                       "face_n_layers_d": 2}},
}


def measurements(size: str) -> list[dict]:
    """Every measurement of a run, most important first."""
    s = SIZES[size]
    gb, lb = s["global_batches"], s["local_batches"]
    specs = [{"kind": "matmul", "dtype": d} for d in DTYPES]
    first = [("global", gb[0]), ("local", lb[0])]
    for stage, batch in first:
        for dtype in DTYPES:
            specs.append({"kind": "train", "stage": stage, "batch": batch, "dtype": dtype})
            specs.append({"kind": "torch_train", "stage": stage, "batch": batch, "dtype": dtype})
    render = {"stage": "local", "face": False}
    for dtype in DTYPES:
        specs.append({"kind": "render", "stage": "local", "face": True, "dtype": dtype})
    specs += [{"kind": "render", **render, "dtype": "float32"}, {"kind": "torch_render", **render, "dtype": "float32"}]
    specs += [{"kind": "train", "stage": "face", "batch": 1, "dtype": d} for d in DTYPES]
    specs += [{"kind": "remat", "stage": "local", "batch": lb[0], "remat": r} for r in ("none", "perceptual", "full")]
    rest = [("global", b) for b in gb[1:]] + [("local", b) for b in lb[1:]]
    for stage, batch in rest:
        specs += [{"kind": "train", "stage": stage, "batch": batch, "dtype": d} for d in DTYPES]
    specs += [{"kind": "render", **render, "dtype": "bfloat16"}, {"kind": "torch_render", **render, "dtype": "bfloat16"}]
    for stage, batch in rest:
        specs += [{"kind": "torch_train", "stage": stage, "batch": batch, "dtype": d} for d in DTYPES]
    for spec in specs:
        spec["size"] = size
        spec["name"] = name_of(spec)
    return specs


def name_of(spec: dict) -> str:
    parts = [spec["kind"], spec.get("stage"), f"b{spec['batch']}" if "batch" in spec else None,
             {True: "face", False: "noface"}.get(spec.get("face")), spec.get("remat") and f"remat_{spec['remat']}",
             spec.get("dtype")]
    return "_".join(p for p in parts if p)


def make_config(size: str, dtype: str = "float32", batch: int = 1, vgg_weights: str = ""):
    """configs/paper.py at ``size``: stage lengths in steps, random VGG19 weights from ``vgg_weights``."""
    from configs import paper
    from edn_jax.models import checks
    from edn_jax import stages

    config = paper.get_config()
    s = SIZES[size]
    config.train.height, config.train.width = s["global"]
    config.train.batch_size = batch
    config.model.dtype = dtype
    for section in ("loss", "model"):
        for field, value in s[section].items():
            config[section][field] = value
    config.loss.vgg19_weights = vgg_weights
    config = stages.resolve_epochs(config, num_pairs=6000)  # a few minutes of video; the steps only set the schedule
    checks.validate_train_config(config, check_batch=False)
    return config


@contextlib.contextmanager
def device_lock(path: str | None):
    """Exclusive use of the device among the check's processes (nothing when ``path`` is None)."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_worker(spec: dict) -> dict:
    """One JAX measurement in this process."""
    import jax

    from benchmarks import common, measure

    exclusive = lambda: device_lock(os.environ.get(LOCK_ENV))  # noqa: E731
    device = jax.devices()[0]
    head = {"name": spec["name"], "jax": jax.__version__, "device": f"{device.platform}: {device.device_kind}"}
    if spec["kind"] == "matmul":
        with exclusive():
            peak = common.matmul_peak_flops(spec["dtype"], SIZES[spec["size"]]["matmul"])
        return {**head, **{k: peak[k] for k in ("flops_per_s", "gflops_per_s", "gflops_per_s_by_n", "method")},
                "dtype": spec["dtype"], "device_memory_bytes": common.device_memory_stats().get("bytes_limit")}
    s = SIZES[spec["size"]]
    with tempfile.TemporaryDirectory() as tmp:
        weights = measure.write_random_vgg("vgg19", os.path.join(tmp, "vgg19.npz"))
        config = make_config(spec["size"], spec.get("dtype", "float32"), spec.get("batch", 1), weights)
        if spec["kind"] == "train":
            return {**head, **measure.train_step(config, spec["stage"], s["steps"], exclusive)}
        if spec["kind"] == "remat":
            config.train.remat = spec["remat"]
            return {**head, "stage": spec["stage"], "batch": spec["batch"], "remat": spec["remat"],
                    **measure.step_memory(config, spec["stage"])}
        h, w = (2 * v for v in s["global"])
        return {**head, **measure.render_scan(config, "local", h, w, spec["face"], s["frames"], s["chunk"],
                                              s["repeats"], exclusive)}


def torch_command(spec: dict, torch_python: str, torch_device: str) -> list[str]:
    """The ``benchmarks/torch_reference.py`` command of a torch measurement, sized as its JAX twin."""
    s = SIZES[spec["size"]]
    config = make_config(spec["size"], spec["dtype"], spec.get("batch", 1))
    m = config.model
    h, w = s["global"]
    local = spec["kind"] == "torch_render" or spec["stage"] == "local"
    if local:
        h, w = 2 * h, 2 * w
    cmd = [torch_python, os.path.join(ROOT, "benchmarks", "torch_reference.py"),
           "train" if spec["kind"] == "torch_train" else "infer", "--device", torch_device, "--dtype", spec["dtype"],
           "--height", str(h), "--width", str(w), "--generator", "local" if local else "global",
           "--ngf", str(m.ngf), "--n_down", str(m.n_downsampling), "--n_blocks", str(m.n_blocks),
           "--local_ngf", str(m.local_ngf), "--n_blocks_local", str(m.n_blocks_local), "--one_line"]
    if spec["kind"] == "torch_train":
        cmd += ["--batch", str(spec["batch"]), "--ndf", str(m.ndf), "--n_layers_d", str(m.n_layers_d),
                "--num_d", str(m.num_d_local if local else m.num_d), "--perceptual", config.loss.perceptual,
                "--lambda_feat", str(config.loss.lambda_feat), "--lambda_vgg", str(config.loss.lambda_vgg),
                "--steps", str(s["steps"])]
    else:
        cmd += ["--frames", str(s["frames"]), "--repeats", str(s["repeats"])]
    return cmd


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            out = json.loads(line)
        except ValueError:
            continue
        if isinstance(out, dict):
            return out
    return None


class Check:
    """The driver: runs the measurements, prints and writes their lines, then the summary."""

    def __init__(self, args):
        self.args, self.results, self.start = args, {}, time.monotonic()
        self.print_lock = threading.Lock()
        self.lock_dir = tempfile.TemporaryDirectory(prefix="edn_device_check_")
        self.lock_path = os.path.join(self.lock_dir.name, "device.lock")
        self.out_file = None
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            self.out_file = open(os.path.join(args.out, "device_check.jsonl"), "w")
        self.torch_problem = self._torch_problem()

    def _torch_problem(self) -> str | None:
        probe = subprocess.run([self.args.torch_python, "-c", "import torch"], capture_output=True, text=True)
        return None if probe.returncode == 0 else f"no torch in {self.args.torch_python}"

    def emit(self, result: dict) -> None:
        with self.print_lock:
            self.results[result["name"]] = result
            line = json.dumps(result)
            print(line, flush=True)
            if self.out_file:
                self.out_file.write(line + "\n")
                self.out_file.flush()

    def remaining(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def run_one(self, spec: dict) -> None:
        name = spec["name"]
        if self.remaining() <= 0:
            return self.emit({"name": name, "skipped": f"not started within --budget_s={self.args.budget_s}"})
        if spec["kind"].startswith("torch") and self.torch_problem:
            return self.emit({"name": name, "skipped": self.torch_problem})
        env = dict(os.environ, **{LOCK_ENV: self.lock_path})
        if spec["kind"].startswith("torch"):  # it takes the lock around its models' whole life on the device
            cmd = torch_command(spec, self.args.torch_python, self.torch_device())
        else:
            cmd = [sys.executable, "-m", "benchmarks.device_check", "--worker", json.dumps(spec)]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=max(self.remaining(), 0) + self.args.grace_s)
        except subprocess.TimeoutExpired:
            return self.emit({"name": name, "error": "timed out (past --budget_s and --grace_s)"})
        out = last_json(proc.stdout)
        if proc.returncode or out is None:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return self.emit({"name": name, "error": f"exit status {proc.returncode}", "stderr_tail": tail})
        if spec["kind"].startswith("torch"):
            out = {"name": name, **{k: v for k, v in out.items() if k != "benchmark"}}
        self.emit({**out, "wall_s": round(time.monotonic() - t0, 1)})

    def torch_device(self) -> str:
        platform = self.results.get("matmul_float32", {}).get("device", "cpu")
        return "cuda" if platform.startswith("gpu") or platform.startswith("cuda") else "cpu"

    def run(self, specs: list[dict]) -> dict:
        matmuls = [s for s in specs if s["kind"] == "matmul"]
        for spec in matmuls:  # first and alone: the peaks MFU is measured against
            self.run_one(spec)
        with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as pool:
            list(pool.map(self.run_one, [s for s in specs if s["kind"] != "matmul"]))
        summary = summarize(self.results, [s["name"] for s in specs])
        summary["wall_s"] = round(time.monotonic() - self.start, 1)
        self.emit(summary)
        if self.out_file:
            self.out_file.close()
        self.lock_dir.cleanup()
        return summary


def _speed(result: dict) -> float | None:
    """images/s of a train step, frames/s of a renderer (the PyTorch reference nests it in per_frame)."""
    return (result.get("images_per_s") or result.get("frames_per_s")
            or (result.get("per_frame") or {}).get("frames_per_s"))


def summarize(results: dict, order: list[str]) -> dict:
    """MFU of every JAX measurement, bfloat16 / float32 and JAX / PyTorch ratios, and the goals."""
    peaks = {d: results.get(f"matmul_{d}", {}).get("flops_per_s") for d in DTYPES}
    mfu, bf16_speedup, over_torch, memory = {}, {}, {}, {}
    for name in order:
        r = results.get(name, {})
        seconds = r.get("step_s_median") or r.get("seconds_per_frame")
        flops = r.get("flops_per_step") or r.get("flops_per_frame")
        if name.startswith(("train_", "render_")) and seconds and flops and peaks.get(r.get("dtype")):
            mfu[name] = round(flops / seconds / peaks[r["dtype"]], 4)
        speed = _speed(r)
        if name.startswith(("train_", "render_")) and name.endswith("_bfloat16") and speed:
            f32_speed = _speed(results.get(name.replace("_bfloat16", "_float32"), {}))
            if f32_speed:
                bf16_speedup[name.replace("_bfloat16", "")] = round(speed / f32_speed, 3)
        if name.startswith("torch_") and speed:
            twin = results.get(name.replace("torch_", ""), {})
            twin_speed = _speed(twin)
            if twin_speed:
                over_torch[name.replace("torch_", "")] = {
                    "jax_over_torch": round(twin_speed / speed, 3),
                    "param_counts_match": all(twin.get(k) == r.get(k) for k in ("g_params", "d_params") if k in r)}
        if name.startswith("train_") and r.get("peak_memory_bytes"):
            memory[name] = round(r["peak_memory_bytes"] / 2 ** 20, 1)
    device_memory = results.get("matmul_float32", {}).get("device_memory_bytes")
    local_b4 = results.get("train_local_b4_float32", {}).get("peak_memory_bytes")
    ratios = [v["jax_over_torch"] for v in over_torch.values()]
    train_ratios = [v["jax_over_torch"] for k, v in over_torch.items() if k.startswith("train_")]
    render_ratios = [v["jax_over_torch"] for k, v in over_torch.items() if k.startswith("render")]
    failed = [n for n in order if n not in results or "error" in results[n]]
    skipped = [n for n in order if "skipped" in results.get(n, {})]
    return {
        "name": "summary", "measured": len(order) - len(failed) - len(skipped), "of": len(order),
        "failed": failed, "skipped": skipped,
        "mfu": mfu, "bf16_over_f32": bf16_speedup, "over_torch": over_torch, "peak_memory_mib": memory,
        "goals": {
            "train_at_least_2x_torch": min(train_ratios) >= 2 if train_ratios else None,
            "render_at_least_2x_torch": min(render_ratios) >= 2 if render_ratios else None,
            "bf16_at_least_1.6x_f32": min(bf16_speedup.values()) >= 1.6 if bf16_speedup else None,
            "local_b4_fits_device": (local_b4 < device_memory) if local_b4 and device_memory else None,
            "param_counts_match": all(v["param_counts_match"] for v in over_torch.values()) if ratios else None,
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--jobs", type=int, default=4, help="measurements that compile at once")
    parser.add_argument("--budget_s", type=float, default=400.0, help="no measurement starts after this many seconds")
    parser.add_argument("--grace_s", type=float, default=60.0, help="a started measurement may run this long past it")
    parser.add_argument("--only", default="", help="comma-separated measurement names (default: all)")
    parser.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for device_check.jsonl")
    parser.add_argument("--torch_python", default=sys.executable, help="the interpreter that has torch")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    specs = measurements(args.size)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s["name"] for s in specs}
        if unknown:
            print(f"error: --only names unknown measurements {sorted(unknown)}; choose from "
                  f"{[s['name'] for s in specs]}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s["name"] in wanted or s["kind"] == "matmul"]
    Check(args).run(specs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
