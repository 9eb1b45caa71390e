"""The workdir's results page: what it shows, that it links only files of the workdir, and that a
real browser (headless Chromium) decodes every image on it and loads every video's metadata."""

import html
import json
import os
import re
import shutil
import subprocess
from urllib.parse import unquote

import numpy as np
import pytest
from clu import metric_writers

from edn_jax.evaluation import report
from edn_jax.runtime import images, video


def _frames(n, h=64, w=48):
    y, x = np.mgrid[0:h, 0:w]
    return [np.stack([(x * 4 + 9 * t) % 256, (y * 3) % 256, np.full_like(x, 30 * t % 256)], -1).astype(np.uint8)
            for t in range(n)]


def _png(path, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    images.write_png(path, np.full((24, 32, 3), value, np.uint8))


@pytest.fixture
def workdir(tmp_path):
    """A workdir holding what train, evaluate and transfer write (small stand-ins of each file)."""
    w = tmp_path / "run one"  # a space: links must be URL-quoted
    stage = w / "evaluation" / "global"
    stage.mkdir(parents=True)
    with open(stage / "metrics.json", "w") as f:
        json.dump({"frames": 20, "step": 1200, "frame_size_hw": [192, 112],
                   "generated": {"ssim": 0.885, "body_ssim": 0.724, "body_lpips": 0.131, "face_lpips": 0.252,
                                 "pose": {"body_distance": 12.73, "body_missed_rate": 0.128}},
                   "mean_train_frame": {"ssim": 0.856, "body_ssim": 0.599, "body_lpips": 0.263, "face_lpips": 0.372},
                   "nearest_train_frame": {"ssim": 0.901, "body_ssim": 0.658, "body_lpips": 0.156,
                                           "face_lpips": 0.256}}, f)
    _png(str(stage / "per_frame.png"))
    _png(str(stage / "samples.png"))
    video.write_video(str(stage / "side_by_side.mp4"), _frames(6), fps=10)
    video.write_video(str(w / "dancer.mp4"), _frames(8), fps=10)
    video.write_video(str(w / "dancer_side_by_side.mp4"), _frames(8, w=144), fps=10)
    with open(w / "transfer_summary.json", "w") as f:
        json.dump({"model_workdir": "runs/me", "sources": [
            {"name": "dancer", "status": "rendered", "source": "dancer.mov", "frames": 8, "fps": 10.0,
             "outputs": {"video": str(w / "dancer.mp4"), "side_by_side": str(w / "dancer_side_by_side.mp4")},
             "self_score": {"pose": {"body_distance": 7.04, "body_missed_rate": 0.25},
                            "people": {"asked_body_found_rate": 0.93, "second_person_rate": 0.0},
                            "frame_jitter": {"output": 1.2, "source": 0.9}}},
            {"name": "broken", "status": "failed", "source": "broken.mp4", "error": "no person found in broken.mp4",
             "outputs": {}}]}, f)
    with open(w / "train_summary.json", "w") as f:
        json.dump({"stages": [{"stage": "global", "step": 3, "height": 192, "width": 112}]}, f)
    for step in (1, 2, 3):
        _png(str(w / "samples" / "global" / f"step_{step:08d}.png"), 40 * step)
    _png(str(w / "holdout_samples_global.png"))
    _png(str(w / "background_global.png"))
    writer = metric_writers.create_default_writer(str(w / "tensorboard" / "global"), just_logging=False)
    for step in (1, 2, 3):
        writer.write_scalars(step, {"g_l1": 4.0 - step, "d_loss": 0.5, "stage": 1.0, "learning_rate": 2e-4 / step})
    writer.write_scalars(3, {"holdout/body_lpips_generated": 0.131, "holdout/body_lpips_nearest_train_frame": 0.156})
    writer.close()
    with open(w / "ablation.md", "w") as f:
        f.write("| variant | body LPIPS |\n|---|---|\n| full | 0.131 |\n")
    report.record_run(str(w), report.RunRecord("train", "python -m edn_jax.main --config configs/real_cpu.py",
                                               "2026-12-06 10:00:00 UTC", 754.0, '{"mode": "train"}'))
    report.record_run(str(w), report.RunRecord("transfer", "python -m edn_jax.main --config configs/transfer.py",
                                               "2026-12-06 10:20:00 UTC", 65.5, '{"mode": "transfer"}'))
    return str(w)


def _sources(page: str) -> list[str]:
    return re.findall(r'<(?:img|video)[^>]* src="([^"]+)"', page)


def test_the_page_shows_each_result_and_links_only_files_of_the_workdir(workdir):
    path = report.write_page(workdir)
    assert path == os.path.join(workdir, "report", "index.html")
    with open(path) as f:
        page = f.read()
    links = _sources(page)
    assert len(links) == 9
    for link in links:
        target = os.path.normpath(os.path.join(workdir, "report", unquote(link)))
        assert os.path.isfile(target), link
        assert target.startswith(workdir), link  # relative, inside the workdir: it opens wherever it is copied
    # Static: nothing to run, nothing fetched from elsewhere.
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # The dance and its side-by-side, playable; the failed source and why.
    assert '<video controls preload="metadata" src="../dancer.mp4">' in page
    assert "../dancer_side_by_side.mp4" in page and "no person found in broken.mp4" in page
    # Held-out table: the model and both baselines; the self score; the runs with their time and command.
    for value in ("0.131", "0.263", "0.156", "0.885", "12.73 px", "7.04", "93%", "12:34", "1:06",
                  "configs/real_cpu.py", "| full | 0.131 |"):
        assert value in page, value
    assert page.index("Dance videos") < page.index("Held-out frames") < page.index("Training") < page.index("Runs")
    assert "step_00000003.png" in page and "step_00000001.png" not in page  # the last sample grid
    assert os.path.isfile(os.path.join(workdir, "report", "curves_global.png"))


def test_curves_are_redrawn_only_when_the_events_change(workdir, monkeypatch):
    report.write_page(workdir)
    plot = os.path.join(workdir, "report", "curves_global.png")
    drawn = os.stat(plot).st_mtime_ns

    def unread(_):
        raise AssertionError("the events were read again although they did not change")

    with monkeypatch.context() as m:
        m.setattr(report, "read_scalars", unread)
        report.write_page(workdir)  # e.g. a transfer run ending in the same workdir
    assert os.stat(plot).st_mtime_ns == drawn
    writer = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard", "global"), just_logging=False)
    writer.write_scalars(4, {"g_l1": 0.5})  # training went on: a new events file
    writer.close()
    report.write_page(workdir)
    assert report.read_scalars(os.path.join(workdir, "tensorboard", "global"))["g_l1"][0].tolist() == [1, 2, 3, 4]
    assert os.stat(plot).st_mtime_ns != drawn


def test_curve_panels_put_a_score_beside_its_baselines_and_leave_out_constants():
    steps = np.array([1, 2, 3])
    scalars = {"g_l1": (steps, np.array([3.0, 2.0, 1.0])), "stage": (steps, np.ones(3)),
               "holdout/body_lpips_generated": (steps, np.array([0.2, 0.15, 0.13])),
               "holdout/body_lpips_mean_train_frame": (steps, np.full(3, 0.26)),
               "holdout/holdout_frames": (steps[-1:], np.array([20.0]))}
    groups = report.panels(scalars)
    assert sorted(groups) == ["g_l1", "holdout/body_lpips"]
    assert sorted(groups["holdout/body_lpips"]) == ["generated", "mean training frame"]


def test_scalars_are_read_back_from_the_tensorboard_events(tmp_path):
    writer = metric_writers.create_default_writer(str(tmp_path), just_logging=False)
    for step in (5, 10):
        writer.write_scalars(step, {"g_vgg": step / 10})
    writer.write_images(10, {"samples": np.zeros((1, 8, 8, 3), np.float32)})  # not a scalar: left out
    writer.close()
    scalars = report.read_scalars(str(tmp_path))
    assert list(scalars) == ["g_vgg"]
    np.testing.assert_array_equal(scalars["g_vgg"][0], [5, 10])
    np.testing.assert_allclose(scalars["g_vgg"][1], [0.5, 1.0])


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


CHECK = """<script>
window.addEventListener('load', () => {
  const videos = [...document.querySelectorAll('video')];
  const done = () => {
    const imgs = [...document.querySelectorAll('img')].map(i => i.getAttribute('src') + '=' + i.naturalWidth);
    const vids = videos.map(v => v.getAttribute('src') + '=' + v.duration);
    const out = document.createElement('pre');
    out.id = 'result';
    out.textContent = JSON.stringify({images: imgs, videos: vids});
    document.body.appendChild(out);
  };
  let left = videos.length;
  if (!left) { done(); return; }
  videos.forEach(v => {
    const one = () => { if (--left === 0) done(); };
    if (v.readyState >= 1) one(); else { v.addEventListener('loadedmetadata', one); v.addEventListener('error', one); }
  });
});
</script>"""


def test_a_real_browser_decodes_every_image_and_loads_every_video(workdir, tmp_path):
    """Headless Chromium (``.ci/run`` installs it from the system's packages) opens a copy of the page
    with a checking script appended, in the same folder, and reports each image's naturalWidth and
    each video's duration once its metadata has loaded."""
    browser = _chromium()
    if browser is None:
        pytest.fail("no chromium on this machine: .ci/run installs it (apt-get install chromium)")
    page = report.write_page(workdir)
    with open(page) as f:
        text = f.read()
    check = os.path.join(os.path.dirname(page), "check.html")
    with open(check, "w") as f:
        f.write(text.replace("</body>", CHECK + "</body>"))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                          "--virtual-time-budget=20000", "--dump-dom", "file://" + check],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.S)
    assert found, (out.stdout[-2000:], out.stderr[-2000:])
    result = json.loads(html.unescape(found.group(1)))
    assert len(result["images"]) == len(re.findall(r"<img ", text)) == 6
    assert len(result["videos"]) == len(re.findall(r"<video ", text)) == 3
    for entry in result["images"]:
        assert float(entry.rsplit("=", 1)[1]) > 0, entry  # decoded
    for entry in result["videos"]:
        assert float(entry.rsplit("=", 1)[1]) > 0, entry  # metadata loaded: a duration
