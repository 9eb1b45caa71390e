"""What a person looks like, for telling people apart, and whether one detection is one person.

``describe`` summarises a detected person on its frame: the hue-saturation histograms of its
clothes, region by region (torso, upper arms, forearms, thighs, shins), each region's mean colour
(its tone), and its size relative to the frame. Colours by region separate people in different
clothes far better than the torso alone (a shirt of the same colour, different trousers); size is
a coarse gate, as people walk towards the camera. Body proportions in 2D change with pose and
turning by more than they differ between adults, so they are not part of it.

The histograms are exact but fragile: a person walking from sun into shade changes hue and
saturation bins (the same man filmed by two cameras in one room: histogram distance 0.73, above
the tracker's 0.65). ``relative_distance`` compares the tones instead, each region's log colour
minus the person's mean over the regions both show: a change of light that scales each colour
channel (darker, bluer) cancels out, and what is left is how the person's regions differ from
one another (shirt lighter than trousers, redder than the arms). On ``../shared/data``, the same
man across the two cameras is at 0.25 (median), as within one camera; the two people of
``two_people_cam01`` at 0.52. It is weaker evidence than the histograms, so the tracker uses it
only together with the subject's place or the others' (``tracking``).

``split_parts`` checks that the face and hands MediaPipe attached to a body sit where that body's
head and wrists are; a part that does not (it came from a person overlapping the subject) is
dropped and the body kept.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from edn_jax.pose import layout

B = layout.B
HANDS = ((layout.LEFT_HAND, "LWrist", "left_hand"), (layout.RIGHT_HAND, "RWrist", "right_hand"))
TORSO = (B["Neck"], B["RShoulder"], B["LShoulder"], B["MidHip"], B["RHip"], B["LHip"])
HEAD = (B["Nose"], B["REye"], B["LEye"], B["REar"], B["LEar"])
LIMBS = {  # each limb on its own, so a limb that lies on another person shows
    "r_upper_arm": ("RShoulder", "RElbow"), "l_upper_arm": ("LShoulder", "LElbow"),
    "r_forearm": ("RElbow", "RWrist"), "l_forearm": ("LElbow", "LWrist"),
    "r_thigh": ("RHip", "RKnee"), "l_thigh": ("LHip", "LKnee"),
    "r_shin": ("RKnee", "RAnkle"), "l_shin": ("LKnee", "LAnkle"),
}
REGION_WEIGHTS = {"torso": 2.0, "r_upper_arm": 0.5, "l_upper_arm": 0.5, "r_forearm": 0.25, "l_forearm": 0.25,
                  "r_thigh": 0.5, "l_thigh": 0.5, "r_shin": 0.5, "l_shin": 0.5}
MIXED_MARGIN = 0.1          # a region this much nearer another person's model than the subject's is theirs
DISTINCT_REGION = 0.4       # ... where the two people's models of it are at least this far apart
HIST_BINS, HIST_RANGES = [16, 8], [0, 180, 0, 256]
TORSO_SAMPLES = 2048        # pixels of the torso sampled on a grid: plenty for a 128-bin histogram
MIN_TONE_WEIGHT = 3.0       # region weight two appearances must share for their tones to be compared (torso + 2 limbs)
TONE_FLOOR = 16.0           # added to a region's mean colour (0-255) before its log: dark regions stay stable
MIN_REGION_PIXELS = 24
LIMB_HALF_WIDTH = 0.02      # of the person's size: sampled across a limb, well inside an adult's limb
FACE_TOLERANCE = 0.15       # face centre to the body's head points, in person sizes (measured: <= 0.07)
SHARED_HAND = 0.1           # a hand this near another person's wrist or hand (person sizes) may be theirs
HAND_TOLERANCE = 0.15       # hand's wrist point to the body's wrist, in person sizes (measured: <= 0.1)


@dataclasses.dataclass(frozen=True)
class Appearance:
    colours: dict[str, np.ndarray]  # region -> normalised HS histogram [16, 8]
    size: float                     # the person's size / the frame's height
    tones: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # region -> log(mean RGB + TONE_FLOOR)

    def blend(self, other: "Appearance", rate: float) -> "Appearance":
        """A running model: regions both have move ``rate`` towards ``other``'s; new regions are added."""
        def mix(mine: dict, theirs: dict) -> dict:
            out = dict(mine)
            for name, value in theirs.items():
                out[name] = value if name not in out else (1 - rate) * out[name] + rate * value
            return out
        return Appearance(mix(self.colours, other.colours), (1 - rate) * self.size + rate * other.size,
                          mix(self.tones, other.tones))


def person_box(kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """(x0, y0, x1, y1) of a person's present body points."""
    box = layout.bounding_box(kps[layout.BODY], threshold)
    return None if box is None else np.array(box, np.float32)


def person_size(kps: np.ndarray, threshold: float) -> float:
    """A scale of the person robust to pose: the larger side of its body box."""
    box = person_box(kps, threshold)
    return 0.0 if box is None else float(max(box[2] - box[0], box[3] - box[1]))


def torso_centre(kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """Mean of the present torso points, else of any present body point."""
    for idx in (list(TORSO), list(range(layout.NUM_BODY))):
        mask = kps[idx, 2] > threshold
        if mask.any():
            return kps[idx][mask, :2].mean(0)
    return None


def pose_distance(a: np.ndarray, b: np.ndarray, threshold: float, statistic=np.mean) -> float:
    """The mean (or ``statistic``) distance of the body points present in both poses, in units of ``a``'s size."""
    both = (a[layout.BODY, 2] > threshold) & (b[layout.BODY, 2] > threshold)
    size = person_size(a, threshold)
    if not both.any() or size <= 0:
        return float("inf")
    return float(statistic(np.linalg.norm(a[layout.BODY][both, :2] - b[layout.BODY][both, :2], axis=1)) / size)


def _histogram(pixels: np.ndarray) -> np.ndarray | None:
    """Normalised HS histogram of RGB pixels [N, 3] (or an image region)."""
    if pixels.size < 3 * MIN_REGION_PIXELS:
        return None
    hsv = cv2.cvtColor(np.ascontiguousarray(pixels.reshape(-1, 1, 3)), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, HIST_BINS, HIST_RANGES).astype(np.float32)
    return hist / max(float(hist.sum()), 1.0)


def torso_colours(frame: np.ndarray, kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """Normalised hue-saturation histogram of the inner torso box."""
    pixels = _torso_pixels(frame, kps, threshold)
    return None if pixels is None else _histogram(pixels)


def _torso_pixels(frame: np.ndarray, kps: np.ndarray, threshold: float) -> np.ndarray | None:
    """RGB pixels of the inner torso box, on a grid of about TORSO_SAMPLES."""
    idx = [i for i in TORSO if kps[i, 2] > threshold]
    if len(idx) < 3:
        return None
    xy = kps[idx, :2]
    lo, hi = xy.min(0), xy.max(0)
    lo, hi = lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo)  # stay inside the torso
    h, w = frame.shape[:2]
    x0, y0 = np.clip(lo.astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(hi).astype(int), 0, [w, h])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    step = max(1, int(np.sqrt((x1 - x0) * (y1 - y0) / TORSO_SAMPLES)))  # a grid of about TORSO_SAMPLES pixels
    return frame[y0:y1:step, x0:x1:step].reshape(-1, frame.shape[-1])


_LIMB_IDX = np.array([[B[a], B[b]] for a, b in LIMBS.values()])
_ALONG = np.linspace(0.2, 0.8, 16)
_ACROSS = np.linspace(-1.0, 1.0, 5)


def _limb_pixels(frame: np.ndarray, kps: np.ndarray, threshold: float, half_width: float) -> dict[str, np.ndarray]:
    """Per limb, RGB pixels sampled along the middle 60% of its segment and across ``half_width``
    pixels, all limbs at once; a limb with a missing end or shorter than 4 pixels is left out."""
    p, q = kps[_LIMB_IDX[:, 0], :2], kps[_LIMB_IDX[:, 1], :2]
    d = q - p
    length = np.linalg.norm(d, axis=1)
    ok = (kps[_LIMB_IDX[:, 0], 2] > threshold) & (kps[_LIMB_IDX[:, 1], 2] > threshold) & (length >= 4)
    normal = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(length, 1e-6)[:, None]
    pts = (p[:, None, None] + _ALONG[None, :, None, None] * d[:, None, None]
           + half_width * _ACROSS[None, None, :, None] * normal[:, None, None]).reshape(len(p), -1, 2)
    pts = pts.round().astype(int)
    h, w = frame.shape[:2]
    inside = (pts[..., 0] >= 0) & (pts[..., 0] < w) & (pts[..., 1] >= 0) & (pts[..., 1] < h)
    return {name: frame[pts[k][inside[k], 1], pts[k][inside[k], 0]]
            for k, name in enumerate(LIMBS) if ok[k]}


def describe(frame: np.ndarray, kps: np.ndarray, threshold: float) -> Appearance | None:
    """The person's appearance on ``frame`` (None if no region of its clothes can be seen)."""
    size = person_size(kps, threshold)
    if size <= 0:
        return None
    regions = _limb_pixels(frame, kps, threshold, max(1.0, LIMB_HALF_WIDTH * size))
    torso = _torso_pixels(frame, kps, threshold)
    if torso is not None:
        regions["torso"] = torso
    colours, tones = {}, {}
    for name, pixels in regions.items():
        hist = _histogram(pixels)
        if hist is not None:
            colours[name] = hist
            tones[name] = np.log(pixels.reshape(-1, 3).astype(np.float32).mean(0) + TONE_FLOOR)
    return Appearance(colours, size / frame.shape[0], tones) if colours else None


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def distance(model: Appearance, seen: Appearance) -> float | None:
    """Weighted mean Bhattacharyya distance over the regions both show, in [0, 1]; None if none."""
    shared = [r for r in REGION_WEIGHTS if r in model.colours and r in seen.colours]
    if not shared:
        return None
    weights = np.array([REGION_WEIGHTS[r] for r in shared])
    dists = np.array([colour_distance(model.colours[r], seen.colours[r]) for r in shared])
    return float((weights * dists).sum() / weights.sum())


def relative_distance(model: Appearance, seen: Appearance) -> float | None:
    """How differently two appearances' regions differ from one another, robust to a change of
    light: each region's tone minus the (weighted) mean tone of the regions both show, compared
    region by region (weighted mean Euclidean distance in log colour; 0 for the same clothes in any
    light that scales the colour channels). None where they share less than MIN_TONE_WEIGHT of
    regions: relative to two or three regions, different clothes can look alike."""
    shared = [r for r in REGION_WEIGHTS if r in model.tones and r in seen.tones]
    if sum(REGION_WEIGHTS[r] for r in shared) < MIN_TONE_WEIGHT:
        return None
    weights = np.array([REGION_WEIGHTS[r] for r in shared], np.float32)[:, None]
    a = np.stack([model.tones[r] for r in shared])
    b = np.stack([seen.tones[r] for r in shared])
    a = a - (weights * a).sum(0) / weights.sum()
    b = b - (weights * b).sum(0) / weights.sum()
    return float((weights[:, 0] * np.linalg.norm(a - b, axis=1)).sum() / weights.sum())


def regions_of_other(subject: Appearance, other: Appearance, seen: Appearance) -> list[str]:
    """The regions of ``seen`` that match ``other``'s model clearly better than ``subject``'s, among
    those where the two people look different: in a detection of the subject, limbs or a torso
    that lie on the other person."""
    out = []
    for r in REGION_WEIGHTS:
        if r in seen.colours and r in subject.colours and r in other.colours:
            if colour_distance(subject.colours[r], other.colours[r]) < DISTINCT_REGION:
                continue  # both wear the same there (bare forearms, say): no evidence either way
            mine = colour_distance(subject.colours[r], seen.colours[r])
            theirs = colour_distance(other.colours[r], seen.colours[r])
            if theirs + MIXED_MARGIN < mine:
                out.append(r)
    return out


def _head_centre(kps: np.ndarray, threshold: float) -> np.ndarray | None:
    if kps[B["Nose"], 2] > threshold:
        return kps[B["Nose"], :2]
    present = [i for i in HEAD if kps[i, 2] > threshold]
    return kps[present, :2].mean(0) if present else None


def split_parts(kps: np.ndarray, threshold: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """The detection with every face or hand that is not on its body's head or wrist removed, and the
    names of the parts removed. A part whose body point is not seen cannot be checked and is kept."""
    size = person_size(kps, threshold)
    if size <= 0:
        return kps, ()
    out, dropped = kps, []
    head = _head_centre(kps, threshold)
    face = kps[layout.FACE]
    if head is not None and (face[:, 2] > 0).any():
        centre = face[face[:, 2] > 0, :2].mean(0)
        if np.linalg.norm(centre - head) > FACE_TOLERANCE * size:
            out = out.copy() if out is kps else out
            out[layout.FACE] = 0.0
            dropped.append("face")
    for part, wrist, name in HANDS:
        hand = kps[part]
        if hand[0, 2] > 0 and kps[B[wrist], 2] > threshold:
            if np.linalg.norm(hand[0, :2] - kps[B[wrist], :2]) > HAND_TOLERANCE * size:
                out = out.copy() if out is kps else out
                out[part] = 0.0
                dropped.append(name)
    return out, tuple(dropped)


def drop_shared_hands(kps: np.ndarray, other: np.ndarray, threshold: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """``kps`` without each hand that sits within SHARED_HAND of its size on ``other``'s wrist or
    hand (a hand two skeletons claim cannot be told apart by bare skin: it is nobody's), and the
    names of the hands removed."""
    size = person_size(kps, threshold)
    if size <= 0:
        return kps, ()
    points = [other[part][other[part, 2] > 0, :2].mean(0) for part, _, _ in HANDS if (other[part, 2] > 0).any()]
    points += [other[B[wrist], :2] for _, wrist, _ in HANDS if other[B[wrist], 2] > threshold]
    out, dropped = kps, []
    for part, _, name in HANDS:
        if not (kps[part, 2] > 0).any():
            continue
        centre = kps[part][kps[part, 2] > 0, :2].mean(0)
        if any(np.linalg.norm(centre - p) <= SHARED_HAND * size for p in points):
            out = out.copy() if out is kps else out
            out[part] = 0.0
            dropped.append(name)
    return out, tuple(dropped)


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / max(smaller, 1e-6))
