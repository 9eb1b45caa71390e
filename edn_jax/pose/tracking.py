"""Choosing one subject in multi-person footage and following it without swaps.

The subject is chosen on the first frame with a person (largest, most central, or nearest a
given point); everyone else seen becomes another tracked person. Each later frame is searched
first in a window around where the subject is predicted to be (its last box moved by its recent
velocity, grown with the frames lost), then, if the subject is not found there, in the whole
frame, and then, for a subject lost only just now with nobody in its window, in the window
turned upside down and sideways (a flip, a person lying down). Where another person is near the
subject, the window is searched a second time with the first person found masked out, so both
are seen.

Every detection is first made one person (``appearance.split_parts``: a face or hand that is
not on the body's head or wrist is dropped; beside an overlapping person, a hand on that person's
hand, found with the subject's torso masked, too) and then judged by one rule. A candidate is the
subject only if its size is plausible, its clothes (``appearance.distance`` to the subject's
running model) match the subject within ``max_appearance_distance``, and it does not match any
other tracked person better; beside an overlapping person, it is refused as mixed if limbs of
it look like that person's where the two dress differently (one skeleton, two people). Among
those left, one near the predicted position wins; a person away from it is accepted by identity
alone, which re-acquires a subject that jumped, flipped or left and came back elsewhere. Without
colours (OpenPose JSON input, or the check turned off) only position decides and nobody far
away is accepted, so identities are never swapped.

In other light (sun to shade) the clothes' histograms move bins. A candidate they refuse is
still the subject when its tones (``appearance.relative_distance``: each region's colour relative
to the person's own, which a change of light cancels) are within TONE_MATCH and either it is where
the subject was going (near the prediction, or, lost for a few frames, where its last horizontal
velocity carries a jump or flip: ``_near``) or another detection on the same frame is a known
other person (the exclusion rule: ``_others_placed``), and no other person matches it better. A
candidate refused there is not remembered as another person, so a subject in other light does
not become "someone else" for the rest of the video.

The subject's appearance model follows it slowly and is never updated from a frame where another
person's box overlaps it; the others' models come from the frames they are seen on, including
a whole-frame scan with the subject masked every ``scan_every`` frames. Each frame gets a
status: tracked, not detected (nobody found) or other person (only other people, or mixed
skeletons, found), and each frame without the subject a reason: every person found, where, and
the verdict with its figures (``TrackStats.reasons``).

``video_tracker.track_video`` runs the tracker over a video, detecting a few frames at once in
threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from edn_jax.pose import appearance, people
from edn_jax.pose.appearance import person_box, person_size, pose_distance, torso_centre
from edn_jax.pose.detector import PoseDetector
from edn_jax.pose.tracker_state import (Candidate, Person, STATUSES, SUBJECT_POLICIES, TrackStats, TrackerConfig,
                                        select_subject)

__all__ = ["STATUSES", "SUBJECT_POLICIES", "TrackerConfig", "TrackStats", "SubjectTracker", "pose_distance",
           "select_subject", "torso_centre", "track_candidates"]  # the settings and record live in tracker_state

TORSO = appearance.TORSO
MAX_OTHERS = 8            # other people remembered
APPEARANCE_RATE = 0.05    # how fast the subject's model follows its clothes (lighting changes)
MIXED_WEIGHT = 0.5        # regions (by appearance.REGION_WEIGHTS) on another person that make a detection mixed:
                          # a limb other than a forearm, both forearms, or the torso
OVERLAP = 0.2             # box overlap (of the smaller box) that makes another person overlapping
FAR_PENALTY = 0.1         # added to a candidate's appearance distance when it is away from the prediction
TONE_MATCH = 0.6          # appearance.relative_distance still the subject in other light (with its place or the others')
LANDING_FRAMES = 8        # frames a lost subject's horizontal velocity is carried to where it may land
LANDING_REACH = 2.0       # ... at most this many subject sizes away
ROTATIONS = (2, 1, 3)     # quarter turns tried when nobody is found upright: upside down first
NOT_GIVEN = object()      # SubjectTracker.update: no detection was made ahead of time
MIN_SIZE_RATIO = 0.4      # a candidate's size / the subject's last, at least (a crouch halves a standing box)
SAME_POSE = 0.05          # half the body points this near (person sizes): the same person detected twice


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


class SubjectTracker:
    """Follows one subject through frames fed in order; see the module docstring."""

    def __init__(self, detector: PoseDetector | None, cfg: TrackerConfig):
        cfg.validate()
        self.detector, self.cfg = detector, cfg
        self.subject: Person | None = None
        self.others: list[Person] = []
        self.t = -1                           # index of the last frame fed
        self.stats = TrackStats()

    # --- prediction -------------------------------------------------------------------------

    def _predicted(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(box, torso centre) of the subject on ``frame``, moved by its velocity for at most 3 frames
        and at most one size: a guess, not to be carried through a long loss."""
        th = self.cfg.conf_threshold
        box, centre = person_box(self.subject.kps, th), torso_centre(self.subject.kps, th)
        move = self.subject.velocity() * min(frame - self.subject.frame, 3)
        limit = float(box[2:].max() - box[:2].min()) if box is not None else 0.0
        norm = float(np.linalg.norm(move))
        if norm > limit > 0:
            move = move * (limit / norm)
        return box + np.concatenate([move, move]), centre + move

    def follow_window(self, height: int, width: int, ahead: int = 1) -> np.ndarray | None:
        """The window frame ``t + ahead`` is searched in first, or None when it is searched whole."""
        if self.subject is None:
            return None
        frame = self.t + ahead
        gap = frame - self.subject.frame
        if gap > self.cfg.reacquire_after:
            return None
        box, _ = self._predicted(frame)
        return people.grow(box, self.cfg.window_margin * (1 + 0.5 * min(gap - 1, 4)), height, width)

    # --- judging ----------------------------------------------------------------------------

    def _candidate(self, frame: np.ndarray | None, kps: np.ndarray) -> Candidate:
        kps, dropped = appearance.split_parts(kps, self.cfg.conf_threshold)
        self.stats.parts_dropped += len(dropped)
        looks = None
        if frame is not None and self.cfg.uses_appearance:
            looks = appearance.describe(frame, kps, self.cfg.conf_threshold)
        return Candidate(kps, looks)

    def _judge(self, c: Candidate, found: list[Candidate]) -> None:
        th, s = self.cfg.conf_threshold, self.subject
        size0, size1 = person_size(s.kps, th), person_size(c.kps, th)
        centre = torso_centre(c.kps, th)
        gap = self.t - s.frame
        if size0 <= 0 or size1 <= 0 or centre is None:
            c.verdict, c.why = "no body", "no body points"
            return
        lo = MIN_SIZE_RATIO if gap <= self.cfg.reacquire_after else 1 / 3
        if not lo <= size1 / size0 <= 1 / lo:
            c.verdict, c.why = "size", f"{size1 / size0:.2f} times the subject's size"
            return
        c.near = self._near(centre, gap, size0)
        if s.looks is not None and c.looks is not None:
            c.d_subject = appearance.distance(s.looks, c.looks)
            c.d_tone = appearance.relative_distance(s.looks, c.looks)
        if c.d_subject is not None:
            limit = self.cfg.max_appearance_distance
            by_tone = (c.d_subject > limit and c.d_tone is not None and c.d_tone <= TONE_MATCH
                       and (c.near or self._others_placed(c, found)))
            if c.d_subject > limit and not by_tone:
                c.verdict = "clothes"
                c.why = f"clothes {c.d_subject:.2f} from the subject's (> {limit:.2f})" + (
                    "" if c.d_tone is None else f", tones {c.d_tone:.2f}" + (
                        f" (> {TONE_MATCH:.2f})" if c.d_tone > TONE_MATCH else
                        ", but neither where the subject was going nor beside a known other person"))
                return
            for other in self.others:
                if other.looks is None:
                    continue
                d = appearance.distance(other.looks, c.looks)
                tone = appearance.relative_distance(other.looks, c.looks)
                if d is not None and (d <= c.d_subject if not by_tone else d <= limit) or (
                        by_tone and tone is not None and tone <= c.d_tone):
                    c.verdict = "another person"
                    c.why = (f"looks like the person last seen on frame {other.frame} "
                             f"(clothes {_figure(d)} from theirs, {c.d_subject:.2f} from the subject's)")
                    return
        elif not c.near:
            c.verdict, c.why = "far", "away from where the subject was going (no colours to tell)"
            return
        overlapping = self._overlapping(c.kps)
        # The mixed check compares histograms region by region, which a change of light moves as a
        # whole; a candidate taken by its tones has had its place or the others' vouch for it instead.
        by_clothes = c.d_subject is None or c.d_subject <= self.cfg.max_appearance_distance
        if s.looks is not None and c.looks is not None and by_clothes and any(
                o.looks is not None and sum(appearance.REGION_WEIGHTS[r] for r in
                                            appearance.regions_of_other(s.looks, o.looks, c.looks)) >= MIXED_WEIGHT
                for o in overlapping):
            c.verdict = "mixed"  # a limb (or the torso) looks like the overlapping person's
            c.why = "limbs of it look like an overlapping person's"
            return
        c.verdict = "subject"

    def _near(self, centre: np.ndarray, gap: int, size: float) -> bool:
        """Whether a torso at ``centre`` is where the subject was going: near its predicted place, or,
        lost for a few frames, near where its last horizontal velocity would have carried it (a jump
        or a flip lands ahead of where it took off)."""
        _, predicted = self._predicted(self.t)
        allowed = self.cfg.max_torso_shift * min(gap, 3) * size
        if float(np.linalg.norm(centre - predicted)) <= allowed:
            return True
        if gap < 2:
            return False
        start = torso_centre(self.subject.kps, self.cfg.conf_threshold)
        if start is None:
            return False
        reach = self.subject.velocity()[0] * min(gap, LANDING_FRAMES)
        reach = float(np.clip(reach, -LANDING_REACH * size, LANDING_REACH * size))
        if abs(reach) < allowed:
            return False
        # Anywhere along the carried line at the landing's height, within the allowed shift of it.
        lo, hi = sorted((start[0], start[0] + reach))
        return lo - allowed <= centre[0] <= hi + allowed and abs(centre[1] - start[1]) <= 2 * allowed

    def _others_placed(self, c: Candidate, found: list[Candidate]) -> bool:
        """The exclusion rule: another detection on this frame, away from ``c``, is a known other
        person (their clothes, or where they were last seen, as ``_match_other`` finds them), so ``c``
        is not them."""
        th = self.cfg.conf_threshold
        box = person_box(c.kps, th)
        # Apart from c: a detection overlapping it may share its limbs (one skeleton, two people).
        return any(d is not c and person_box(d.kps, th) is not None
                   and appearance.box_overlap(box, person_box(d.kps, th)) <= OVERLAP
                   and self._match_other(d) is not None for d in found)

    def _overlapping(self, kps: np.ndarray) -> list[Person]:
        """Other people whose boxes, where they were last seen (at most ``scan_every`` frames ago: a person
        behind the subject may be seen only by the scans), overlap ``kps``'s by more than OVERLAP."""
        recent = [p for p in self.others if self.t - p.frame <= max(self.cfg.scan_every, 2)]
        return self._overlaps(kps, recent, OVERLAP)

    def _overlaps(self, kps: np.ndarray, others: list[Person], more_than: float = 0.0) -> list[Person]:
        """Those of ``others`` whose last boxes overlap ``kps``'s box by more than ``more_than``."""
        box = person_box(kps, self.cfg.conf_threshold)
        return [p for p in others
                if appearance.box_overlap(box, person_box(p.kps, self.cfg.conf_threshold)) > more_than]

    def _score(self, c: Candidate) -> float:
        if c.d_subject is not None:
            return c.d_subject + (0.0 if c.near else FAR_PENALTY)
        return pose_distance(self.subject.kps, c.kps, self.cfg.conf_threshold)

    def _choose(self, candidates: list[Candidate]) -> Candidate | None:
        for c in candidates:
            # A candidate refused for clothes whose tones match is judged again: the detections found
            # since may show a known other person elsewhere (the exclusion rule).
            if not c.verdict or (c.verdict == "clothes" and c.d_tone is not None and c.d_tone <= TONE_MATCH):
                self._judge(c, candidates)
        ok = [c for c in candidates if c.verdict == "subject"]
        return min(ok, key=self._score, default=None)

    # --- bookkeeping ------------------------------------------------------------------------

    def _same_place(self, a: np.ndarray, b: np.ndarray, fraction: float) -> bool:
        th = self.cfg.conf_threshold
        ca, cb, size = torso_centre(a, th), torso_centre(b, th), person_size(a, th)
        return ca is not None and cb is not None and float(np.linalg.norm(ca - cb)) <= fraction * max(size, 1.0)

    def _remember_others(self, candidates: list[Candidate], choice: Candidate | None) -> None:
        """Records every candidate that is not the subject as another person, or updates one."""
        th = self.cfg.conf_threshold
        seen_now: list[Person] = []
        for c in candidates:
            if c is choice or person_box(c.kps, th) is None:
                continue
            if choice is not None and self._same_place(choice.kps, c.kps, 0.3):
                continue  # the subject found twice (window and whole frame)
            if choice is None and self.subject is not None and (
                    c.verdict not in ("clothes", "another person") or self._maybe_subject(c)):
                continue  # maybe the subject, refused for its size, place or light: not evidence of someone else
            if any(self._same_place(p.kps, c.kps, 0.3) for p in seen_now):
                continue
            match = self._match_other(c)
            if match is None:
                match = Person(c.kps, self.t, c.looks)
                self.others.append(match)
                if len(self.others) > MAX_OTHERS:
                    self.others.remove(min(self.others, key=lambda p: p.frame))
            elif c.looks is not None:
                if match.looks is None:
                    match.looks = c.looks
                elif not self._overlaps(c.kps, [p for p in self.others if p is not match and p.frame == self.t]):
                    match.looks = match.looks.blend(c.looks, APPEARANCE_RATE)
            match.seen(c.kps, self.t, th)
            seen_now.append(match)

    def _maybe_subject(self, c: Candidate) -> bool:
        """A candidate refused for clothes where the subject was going, or whose tones still match the
        subject's (in other light): no evidence of anyone else."""
        return c.verdict == "clothes" and (c.near or (c.d_tone is not None and c.d_tone <= TONE_MATCH))

    def _match_other(self, c: Candidate) -> Person | None:
        """The other person ``c`` continues: near where it was, else the best clothes match."""
        th = self.cfg.conf_threshold
        near = [p for p in self.others
                if self._same_place(p.kps, c.kps, 0.5 + 0.1 * min(self.t - p.frame, 10)) and p.frame < self.t]
        if near:
            return min(near, key=lambda p: pose_distance(p.kps, c.kps, th))
        scored = [(appearance.distance(p.looks, c.looks), p) for p in self.others
                  if p.looks is not None and c.looks is not None and p.frame < self.t]
        scored = [(d, p) for d, p in scored if d is not None and d <= self.cfg.max_appearance_distance]
        return min(scored, key=lambda dp: dp[0])[1] if scored else None

    def _accept(self, c: Candidate) -> None:
        s = self.subject
        if not c.near:
            self.stats.reacquired += 1
        if c.looks is not None:
            if s.looks is None:
                s.looks = c.looks
            elif not self._overlaps(c.kps, [p for p in self.others if self.t - p.frame <= 1]):
                s.looks = s.looks.blend(c.looks, APPEARANCE_RATE)
        s.seen(c.kps, self.t, self.cfg.conf_threshold)

    def _start(self, candidates: list[Candidate], height: int, width: int) -> Candidate:
        choice = candidates[select_subject([c.kps for c in candidates], height, width, self.cfg)]
        self.subject = Person(choice.kps, self.t, choice.looks)
        self.subject.seen(choice.kps, self.t, self.cfg.conf_threshold)
        return choice

    def _finish(self, candidates: list[Candidate], choice: Candidate | None) -> np.ndarray | None:
        self.stats.rejected += sum(c.verdict in ("clothes", "another person", "far", "mixed") for c in candidates)
        self._remember_others(candidates, choice)
        if choice is None:
            self.stats.status.append("other_person" if candidates else "not_detected")
            self.stats.reasons.append(self._reason(candidates))
            return None
        self.stats.tracked += 1
        self.stats.status.append("tracked")
        self.stats.reasons.append("")
        return choice.kps

    def _reason(self, candidates: list[Candidate]) -> str:
        """Why no subject was taken on this frame, candidate by candidate (left to right)."""
        if self.subject is None:
            return "nobody found yet (the subject is chosen on the first frame with a person)"
        gap = self.t - self.subject.frame
        where = ("the whole frame searched" if gap > self.cfg.reacquire_after
                 else "its window and the whole frame searched")
        if not candidates:
            return f"nobody found ({where}; subject last seen {gap} frame(s) ago)"
        th = self.cfg.conf_threshold
        parts = []
        for c in sorted(candidates, key=lambda c: float(person_box(c.kps, th)[0])):
            x0, y0, x1, y1 = (int(round(v)) for v in person_box(c.kps, th))
            parts.append(f"person at x {x0}-{x1}, y {y0}-{y1}: {c.verdict or 'not judged'}"
                         + (f" ({c.why})" if c.why else ""))
        return f"{len(candidates)} found, none the subject ({where}): " + "; ".join(parts)

    # --- one frame --------------------------------------------------------------------------

    def _detect(self, frame: np.ndarray, found: list[Candidate], fn, *args) -> Candidate | None:
        kps = fn(self.detector, frame, *args)
        if kps is None or person_box(kps, self.cfg.conf_threshold) is None:
            return None
        c = self._candidate(frame, kps)
        found.append(c)
        return c

    def _others_near(self, window: np.ndarray) -> bool:
        return any(self.t - p.frame <= max(self.cfg.scan_every, 1)
                   and appearance.box_overlap(window, person_box(p.kps, self.cfg.conf_threshold)) > 0
                   for p in self.others)

    def _search(self, frame: np.ndarray, first) -> tuple[list[Candidate], Candidate | None]:
        h, w = frame.shape[:2]
        th = self.cfg.conf_threshold
        found: list[Candidate] = []
        window = self.follow_window(h, w, 0)
        choice = None
        if window is not None:
            if first is NOT_GIVEN:
                self._detect(frame, found, people.detect_in_window, window)
            elif first is not None and person_box(first, th) is not None:
                found.append(self._candidate(frame, first))
            choice = self._choose(found)
            if choice is None:  # a tighter window may leave out the person who was found
                box, _ = self._predicted(self.t)
                self._detect(frame, found, people.detect_in_window, people.grow(box, self.cfg.window_margin / 4, h, w))
                choice = self._choose(found)
            if found and (choice is None or self._others_near(window)):
                # Mask the person found first; if that is someone else, keep the subject's predicted box.
                keep = None if choice is found[0] else self._predicted(self.t)[0]
                self._detect(frame, found, people.detect_in_window, window, person_box(found[0].kps, th), keep)
                choice = self._choose(found)
        searched_whole = False
        if choice is None:
            known = [person_box(c.kps, th) for c in found]
            for kps in people.detect_people(self.detector, frame, self.cfg.max_people, th, exclude=known):
                found.append(self._candidate(frame, kps))
            searched_whole = True
            choice = self._choose(found)
        if choice is None and not found and window is not None and self.cfg.rotated_tries:
            for quarters in ROTATIONS:
                c = self._detect(frame, found, people.detect_rotated, window, quarters)
                choice = self._choose(found) if c is not None else None
                if choice is not None:
                    self.stats.rotated += 1
                    break
        if choice is not None:
            self._drop_shared_hands(frame, found, choice, window)
        if (choice is not None and not searched_whole and self.cfg.scan_every
                and self.t % self.cfg.scan_every == 0):
            known = [person_box(choice.kps, th)]
            for kps in people.detect_people(self.detector, frame, self.cfg.max_people - 1, th, exclude=known):
                c = self._candidate(frame, kps)
                c.verdict = "scan"
                found.append(c)
        return found, choice

    def _drop_shared_hands(self, frame: np.ndarray, found: list[Candidate], choice: Candidate,
                           window: np.ndarray | None) -> None:
        """Beside an overlapping person, detects again with only the subject's torso masked, which
        finds that person, and drops each hand of the subject's that sits on that person's wrist or
        hand: bare hand on bare hand, clothes cannot tell whose it is, and MediaPipe gives the
        subject the other's hand. The second detection is kept as a sighting of the other person."""
        th = self.cfg.conf_threshold
        hands = [part for part, _, _ in appearance.HANDS if (choice.kps[part, 2] > 0).any()]
        torso = choice.kps[list(TORSO)]
        seen = torso[:, 2] > th
        overlapping = self._overlapping(choice.kps) if hands and seen.sum() >= 3 else []
        if not overlapping:
            return
        h, w = frame.shape[:2]
        box = np.concatenate([torso[seen, :2].min(0), torso[seen, :2].max(0)]).astype(np.float32)
        whole = np.array([0, 0, w, h], np.float32)
        other = self._detect(frame, found, people.detect_in_window, whole if window is None else window, box)
        if other is None:
            return
        if self._is_subject_again(choice, other, overlapping):
            return
        other.verdict = "scan"
        kept, dropped = appearance.drop_shared_hands(choice.kps, other.kps, th)
        choice.kps = kept
        self.stats.parts_dropped += len(dropped)

    def _is_subject_again(self, choice: Candidate, other: Candidate, overlapping: list[Person]) -> bool:
        """Whether a detection made around the subject's masked torso is the subject once more: its
        clothes match the subject's better than every overlapping person's, or, without colours,
        most of its body points are the subject's."""
        looks = self.subject.looks
        if looks is not None and other.looks is not None:
            d = appearance.distance(looks, other.looks)
            rivals = [appearance.distance(p.looks, other.looks) for p in overlapping if p.looks is not None]
            rivals = [r for r in rivals if r is not None]
            if d is not None and rivals:
                return d <= min(rivals)
        return pose_distance(choice.kps, other.kps, self.cfg.conf_threshold, np.median) <= SAME_POSE

    def update(self, frame: np.ndarray, first=NOT_GIVEN) -> np.ndarray | None:
        """The subject's keypoints on this frame, or None (missing) if not found.

        ``first``, if given, is ``people.detect_in_window`` on this frame in a ``follow_window``
        computed ahead of time (None if nobody was found there); it replaces the first detection
        in the window and is ignored when the frame is searched whole.
        """
        self.t += 1
        self.stats.frames += 1
        if self.subject is None:
            found = [self._candidate(frame, k) for k in
                     people.detect_people(self.detector, frame, self.cfg.max_people, self.cfg.conf_threshold)]
            choice = self._start(found, *frame.shape[:2]) if found else None
            return self._finish(found, choice)
        found, choice = self._search(frame, first)
        if choice is not None:
            self._accept(choice)
        return self._finish(found, choice)

    def update_with_people(self, candidates: list[np.ndarray], height: int, width: int) -> np.ndarray | None:
        """The same rules over everyone already found on a frame (OpenPose JSON: no image, so no colours)."""
        self.t += 1
        self.stats.frames += 1
        found = [self._candidate(None, k) for k in candidates if person_box(k, self.cfg.conf_threshold) is not None]
        if self.subject is None:
            choice = self._start(found, height, width) if found else None
        else:
            choice = self._choose(found)
            if choice is not None:
                self._accept(choice)
        return self._finish(found, choice)


def track_candidates(candidates: Iterable[list[np.ndarray]], height: int, width: int, cfg: TrackerConfig,
                     stats: TrackStats | None = None) -> Iterator[np.ndarray | None]:
    """The same subject choice and identity rule over per-frame people lists (e.g. OpenPose JSON);
    ``stats``, if given, is filled in as frames are consumed."""
    tracker = SubjectTracker(None, cfg)
    if stats is not None:
        tracker.stats = stats
    for found in candidates:
        yield tracker.update_with_people(found, height, width)
