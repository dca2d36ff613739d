"""Retargeting a driving pose track onto the reference person's body and face.

Without it MagicPose draws the reference person with the driving video's proportions, the top complaint of
every peer pack (docs/pose.md §7; MimicMotionWrapper #23/#85/#89, WanAnimatePreprocess #23). Modes:

- ``global``: one isotropic scale + offset that maps the driver's body onto the reference body at calibration
  (the RMS spread of the shared body joints, centroids aligned); the MimicMotion ``get_video_pose`` idea
  (docs/pose.md §7), applied to body, hands and face alike.
- ``per_bone``: the tree walk of UniAnimate / WanAnimatePreprocess (docs/pose.md §7), generalised: the neck is placed
  by the global map, then every bone is walked outward from the neck keeping the driver's direction and scaling
  the driver's length by the bone's calibration ratio (reference length / driver's typical length, the 90th
  percentile over the track), so at calibration length every bone has exactly the reference length and
  foreshortening in the driver is kept. Bones the reference lacks use their mirror bone, else the global scale.
  Hands follow their wrist (scaled by the forearm ratio); the face follows the nose.
- face expression transfer (both modes, when the reference has a face): the reference's jaw, nose, face box,
  eye distance and jaw width are kept; the eye, pupil, brow and mouth *shapes* come from the driver (scaled
  isotropically by the inter-ocular ratio, so ratios such as mouth opening / width carry over exactly); the
  driver's head roll is applied. No peer pack does this.

``strength`` blends from the driver (0) to the retargeted pose (1). All coordinates are output-canvas pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .keypoints import Person

log = logging.getLogger("MagicPose")

RETARGET_MODES = ("none", "global", "per_bone")
NECK, NOSE = 1, 0
# Bones of the OpenPose-18 tree, parents before children, walked outward from the neck.
BONES = [(1, 0), (1, 2), (1, 5), (1, 8), (1, 11), (0, 14), (0, 15), (14, 16), (15, 17),
         (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13)]
MIRROR = {(1, 2): (1, 5), (1, 8): (1, 11), (0, 14): (0, 15), (14, 16): (15, 17), (2, 3): (5, 6), (3, 4): (6, 7),
          (8, 9): (11, 12), (9, 10): (12, 13)}
MIRROR.update({v: k for k, v in list(MIRROR.items())})
CALIBRATION_POINTS = [0, 1, 2, 5, 8, 11, 14, 15, 16, 17]  # stable body points used by the global fit
RATIO_CLAMP = 3.0   # a bone ratio stays within [global / 3, global x 3] (WanAnimatePreprocess #23: huge shoulders)
LENGTH_PERCENTILE = 90

# iBUG-68 regions (+ OpenPose pupils 68 = right, 69 = left), subject's sides
R_EYE = list(range(36, 42)) + [68]
L_EYE = list(range(42, 48)) + [69]
R_BROW = list(range(17, 22))
L_BROW = list(range(22, 27))
MOUTH = list(range(48, 68))
MOUTH_CORNERS = (48, 54)
NOSE_TIP = 30


@dataclass
class Calibration:
    """What a track is retargeted with: the global map and per-bone ratios."""

    scale: float = 1.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))
    ratios: dict[tuple[int, int], float] = field(default_factory=dict)  # bone -> reference / driver length

    def map(self, xy: np.ndarray) -> np.ndarray:
        return xy * self.scale + self.offset


def _present(points: np.ndarray | None, idx) -> bool:
    return points is not None and bool((points[idx, 2] > 0).all())


def _length(points: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[b, :2] - points[a, :2]))


def calibrate(reference: Person, driver: list[Person | None]) -> Calibration:
    """Fit the global map and the bone ratios of a driving track onto ``reference``.

    Global: the calibration frame is the first driver frame with a neck and both shoulders (else the first
    with any shared point); scale = RMS spread ratio of the body points both have, centroids aligned.
    """
    ref = reference.body
    frames = [p for p in driver if p is not None]
    cal = Calibration()
    calib = next((p for p in frames if _present(p.body, [1, 2, 5])), None)
    if calib is None:
        calib = next((p for p in frames if ((p.body[:, 2] > 0) & (ref[:, 2] > 0)).any()), None)
    if calib is None:
        log.warning("retarget: the driver and the reference share no body joint; retargeting is skipped")
        return cal
    shared = [i for i in CALIBRATION_POINTS if ref[i, 2] > 0 and calib.body[i, 2] > 0]
    if not shared:
        shared = [i for i in range(18) if ref[i, 2] > 0 and calib.body[i, 2] > 0]
    r, d = ref[shared, :2], calib.body[shared, :2]             # (K, 2) each
    rc, dc = r.mean(axis=0), d.mean(axis=0)
    spread_d = np.sqrt(((d - dc) ** 2).sum(axis=1).mean())
    spread_r = np.sqrt(((r - rc) ** 2).sum(axis=1).mean())
    cal.scale = float(spread_r / spread_d) if len(shared) >= 2 and spread_d > 1e-6 and spread_r > 1e-6 else 1.0
    cal.offset = rc - cal.scale * dc
    for bone in BONES:
        a, b = bone
        lengths = [_length(p.body, a, b) for p in frames if _present(p.body, [a, b])]
        lengths = [v for v in lengths if v > 1e-6]
        ref_bone = bone if _present(ref, [a, b]) else MIRROR.get(bone)
        if not lengths or ref_bone is None or not _present(ref, list(ref_bone)):
            continue
        ratio = _length(ref, *ref_bone) / float(np.percentile(lengths, LENGTH_PERCENTILE))
        lo, hi = cal.scale / RATIO_CLAMP, cal.scale * RATIO_CLAMP
        if not lo <= ratio <= hi:
            log.warning("retarget: bone %s ratio %.2f is far from the global scale %.2f; clamped (the reference "
                        "pose may be sitting or side-on)", bone, ratio, cal.scale)
            ratio = float(np.clip(ratio, lo, hi))
        cal.ratios[bone] = ratio
    return cal


def _rot(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _eye_line(face: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Right and left eye centres (contour means) and the roll angle of the line between them."""
    er = face[36:42, :2].mean(axis=0)
    el = face[42:48, :2].mean(axis=0)
    v = el - er
    return er, el, float(np.arctan2(v[1], v[0]))


def transfer_face(driver_face: np.ndarray, reference_face: np.ndarray, ref_anchor: np.ndarray,
                  new_anchor: np.ndarray) -> np.ndarray | None:
    """Driver expression on reference geometry, (70, 3), placed so that ``ref_anchor`` (a point in the
    reference image, e.g. its nose) lands on ``new_anchor`` with the driver's head roll.

    Kept from the reference: jaw (0-16), nose (27-35), eye centres (so the eye distance), hence the face box
    and jaw width. From the driver, scaled by s = reference / driver inter-ocular distance: each eye's and
    pupil's shape about its eye centre, each brow about its eye centre, the mouth about its corner midpoint.
    Returns None when either face lacks the eye contours needed.
    """
    eyes = list(range(36, 48))
    if not (_present(driver_face, eyes) and _present(reference_face, eyes)):
        return None
    dr, dl, theta_d = _eye_line(driver_face)
    rr, rl, theta_r = _eye_line(reference_face)
    s = np.linalg.norm(rl - rr) / max(np.linalg.norm(dl - dr), 1e-6)
    cd, cr = (dr + dl) / 2, (rr + rl) / 2
    d_up = (driver_face[:, :2] - cd) @ _rot(-theta_d).T        # (70, 2) driver, upright, eye-mid origin
    r_up = (reference_face[:, :2] - cr) @ _rot(-theta_r).T     # (70, 2) reference, upright
    er_r, el_r = r_up[36:42].mean(axis=0), r_up[42:48].mean(axis=0)
    er_d, el_d = d_up[36:42].mean(axis=0), d_up[42:48].mean(axis=0)
    out = r_up.copy()
    for idx, ref_c, drv_c in ((R_EYE + R_BROW, er_r, er_d), (L_EYE + L_BROW, el_r, el_d)):
        out[idx] = ref_c + s * (d_up[idx] - drv_c)
    a, b = MOUTH_CORNERS
    if _present(driver_face, [a, b]) and _present(reference_face, [a, b]):
        mr, md = (r_up[a] + r_up[b]) / 2, (d_up[a] + d_up[b]) / 2
        out[MOUTH] = mr + s * (d_up[MOUTH] - md)
    anchor_up = (ref_anchor - cr) @ _rot(-theta_r).T           # the anchor in the upright reference frame
    placed = (out - anchor_up) @ _rot(theta_d).T + new_anchor  # (70, 2)
    conf = np.minimum(driver_face[:, 2], np.where(reference_face[:, 2] > 0, 1.0, 0.0))
    # points drawn from the driver need the driver's point; jaw and nose need the reference's
    keep_ref = list(range(0, 17)) + list(range(27, 36))
    conf[keep_ref] = np.where(reference_face[keep_ref, 2] > 0, np.maximum(driver_face[keep_ref, 2], 1e-3), 0.0)
    res = np.zeros((70, 3))
    res[:, :2] = placed
    res[:, 2] = conf
    res[conf <= 0] = 0.0
    return res


def _scale_about(points: np.ndarray | None, old_anchor: np.ndarray, new_anchor: np.ndarray,
                 s: float) -> np.ndarray | None:
    if points is None:
        return None
    out = points.copy()
    m = out[:, 2] > 0
    out[m, :2] = new_anchor + s * (out[m, :2] - old_anchor)
    return out


def _global(points: np.ndarray | None, cal: Calibration) -> np.ndarray | None:
    if points is None:
        return None
    out = points.copy()
    m = out[:, 2] > 0
    out[m, :2] = cal.map(out[m, :2])
    return out


def retarget_person(driver: Person, reference: Person, cal: Calibration, mode: str = "per_bone",
                    face_transfer: bool = True) -> Person:
    """One driving person -> retargeted person (full strength)."""
    if mode not in RETARGET_MODES:
        raise ValueError(f"retarget mode {mode!r} is not one of {', '.join(RETARGET_MODES)}")
    if mode == "none":
        return driver.copy()
    d = driver.body
    body = _global(d, cal)
    if mode == "per_bone":
        new = np.zeros_like(d)
        placed = np.zeros(18, dtype=bool)
        if d[NECK, 2] > 0:
            new[NECK] = body[NECK]
            placed[NECK] = True
        for a, b in BONES:
            if d[b, 2] <= 0:
                continue
            if placed[a]:
                v = d[b, :2] - d[a, :2]
                ratio = cal.ratios.get((a, b), cal.scale)
                new[b, :2] = new[a, :2] + v * ratio
            else:
                new[b, :2] = body[b, :2]  # parent unknown: global map
            new[b, 2] = d[b, 2]
            placed[b] = True
        body = new
    out = Person(body=body)
    # hands follow their wrist, scaled like the forearm
    for part, wrist, forearm in (("right_hand", 4, (3, 4)), ("left_hand", 7, (6, 7))):
        hand = getattr(driver, part)
        if hand is None:
            continue
        if mode == "per_bone" and d[wrist, 2] > 0:
            setattr(out, part, _scale_about(hand, d[wrist, :2], body[wrist, :2], cal.ratios.get(forearm, cal.scale)))
        else:
            setattr(out, part, _global(hand, cal))
    # face: expression transfer onto the reference face, else follow the nose
    if driver.face is not None:
        face = None
        nose_ok = d[NOSE, 2] > 0
        if face_transfer and reference.face is not None:
            if nose_ok and reference.body[NOSE, 2] > 0:
                ref_anchor, new_anchor = reference.body[NOSE, :2], body[NOSE, :2]
            elif driver.face[NOSE_TIP, 2] > 0 and reference.face[NOSE_TIP, 2] > 0:
                ref_anchor, new_anchor = reference.face[NOSE_TIP, :2], cal.map(driver.face[NOSE_TIP, :2])
            else:
                ref_anchor = new_anchor = None
            if ref_anchor is not None:
                face = transfer_face(driver.face, reference.face, ref_anchor, new_anchor)
        if face is None:
            if mode == "per_bone" and nose_ok:
                head = [cal.ratios[b] for b in ((0, 14), (0, 15)) if b in cal.ratios]
                face = _scale_about(driver.face, d[NOSE, :2], body[NOSE, :2],
                                    float(np.mean(head)) if head else cal.scale)
            else:
                face = _global(driver.face, cal)
        out.face = face
    return out


def blend_person(base: Person, target: Person, strength: float) -> Person:
    """Per point: base + strength x (target - base) where both exist; else target's point (strength 1) or
    base's point."""
    if strength >= 1.0:
        return target.copy()
    out = target.copy()
    for part in ("body", "face", "left_hand", "right_hand"):
        b, t = getattr(base, part), getattr(target, part)
        if t is None or b is None:
            setattr(out, part, None if b is None else b.copy())
            continue
        res = t.copy()
        both = (b[:, 2] > 0) & (t[:, 2] > 0)
        res[both, :2] = b[both, :2] + strength * (t[both, :2] - b[both, :2])
        only_b = (b[:, 2] > 0) & ~(t[:, 2] > 0)
        res[only_b] = b[only_b]
        setattr(out, part, res)
    return out


def retarget_track(people: list[Person | None], reference: Person | None, mode: str = "per_bone",
                   strength: float = 1.0, face_transfer: bool = True) -> list[Person | None]:
    """Retarget one person per frame (output-canvas pixels) onto ``reference``; None frames stay None."""
    if mode not in RETARGET_MODES:
        raise ValueError(f"retarget mode {mode!r} is not one of {', '.join(RETARGET_MODES)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"retarget strength must be in [0, 1], got {strength}")
    if mode == "none" or strength == 0.0:
        return [None if p is None else p.copy() for p in people]
    if reference is None or reference.is_empty:
        raise ValueError("retargeting needs a reference person: connect a reference (MagicPose Load Reference "
                         "output or an IMAGE with a visible person), or set retarget to 'none'")
    cal = calibrate(reference, people)
    out = []
    for p in people:
        if p is None:
            out.append(None)
            continue
        out.append(blend_person(p, retarget_person(p, reference, cal, mode, face_transfer), strength))
    return out
