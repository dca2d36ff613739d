"""Retargeting: per_bone gives exactly the reference bone lengths; global fits scale + offset; the face transfer
keeps the reference face geometry and carries the driver's expression (docs/pose.md §7)."""
from __future__ import annotations

import numpy as np
import pytest
from support.pose_data import face_points, hand_points, standing_person

from magicpose_core.pose.keypoints import Person
from magicpose_core.pose.retarget import BONES, blend_person, calibrate, retarget_track, transfer_face

# Driver skeleton by forward kinematics: bone lengths fixed (a generic person x 0.8 with its own proportions,
# within a factor 3 of the reference's), angles animated.
_GENERIC = standing_person(face=False, hands=False).body
DRIVER_LENGTHS = {b: 0.8 * (0.75 + 0.05 * ((7 * i) % 11)) * np.linalg.norm(_GENERIC[b[1], :2] - _GENERIC[b[0], :2])
                  for i, b in enumerate(BONES)}


def _fk(root: np.ndarray, angles: dict, lengths: dict) -> np.ndarray:
    body = np.zeros((18, 3))
    body[1] = [*root, 1.0]
    for a, b in BONES:
        d = np.array([np.cos(angles[(a, b)]), np.sin(angles[(a, b)])])
        body[b] = [*(body[a, :2] + lengths[(a, b)] * d), 1.0]
    return body


def _driver_track(n: int = 12) -> list[Person]:
    rng = np.random.default_rng(3)
    base = {b: rng.uniform(-np.pi, np.pi) for b in BONES}
    out = []
    for t in range(n):
        ang = {b: v + 0.3 * np.sin(0.5 * t + i) for i, (b, v) in enumerate(base.items())}
        body = _fk(np.array([300.0 + 5 * t, 200.0]), ang, DRIVER_LENGTHS)
        out.append(Person(body=body, right_hand=hand_points(body[4, :2]), left_hand=hand_points(body[7, :2])))
    return out


def _lengths(body: np.ndarray) -> dict:
    return {b: float(np.linalg.norm(body[b[1], :2] - body[b[0], :2])) for b in BONES}


def test_per_bone_gives_exactly_the_reference_bone_lengths():
    ref = standing_person(scale=1.1, offset=(-20, 10), hands=False, face=False)
    ref.body[[9, 10, 12, 13], 1] += 40            # longer legs than the generic person
    ref_len = _lengths(ref.body)
    drivers = _driver_track()
    out = retarget_track(drivers, ref, "per_bone", 1.0)
    for drv, res in zip(drivers, out):
        got = _lengths(res.body)
        for b in BONES:
            assert got[b] == pytest.approx(ref_len[b], abs=1e-9), b
            d_dir = drv.body[b[1], :2] - drv.body[b[0], :2]
            r_dir = res.body[b[1], :2] - res.body[b[0], :2]
            cos = d_dir @ r_dir / np.linalg.norm(d_dir) / np.linalg.norm(r_dir)
            assert cos == pytest.approx(1.0, abs=1e-12)            # the driver's bone directions are kept
        # hands follow their wrist
        np.testing.assert_allclose(res.right_hand[0, :2], res.body[4, :2], atol=1e-9)


def test_implausible_bone_ratios_are_clamped(caplog):
    ref = standing_person(hands=False, face=False)
    ref.body[10, 1] += 400                           # a 5x longer right shin (e.g. a bad reference detection)
    cal = calibrate(ref, _driver_track(3))
    assert cal.ratios[(9, 10)] == pytest.approx(3 * cal.scale)
    assert "clamped" in caplog.text


def test_per_bone_missing_reference_bone_uses_its_mirror():
    ref = standing_person(hands=False, face=False)
    ref.body[7] = 0.0                                # reference's left wrist hidden
    out = retarget_track(_driver_track(3), ref, "per_bone")
    ref_len = _lengths(ref.body)
    for res in out:
        assert _lengths(res.body)[(6, 7)] == pytest.approx(ref_len[(3, 4)], abs=1e-9)


def test_global_maps_a_scaled_copy_onto_the_reference():
    driver = standing_person(scale=0.7, offset=(40, 60))
    ref = standing_person(scale=0.7, offset=(40, 60)).transformed(lambda xy: xy * 1.3 + np.array([-25.0, 7.0]))
    cal = calibrate(ref, [driver])
    assert cal.scale == pytest.approx(1.3)
    res = retarget_track([driver], ref, "global", 1.0, face_transfer=False)[0]
    for part in ("body", "face", "left_hand", "right_hand"):
        np.testing.assert_allclose(getattr(res, part)[:, :2], getattr(ref, part)[:, :2], atol=1e-9)


def test_strength_blends_and_none_is_identity():
    driver = standing_person(scale=0.7)
    ref = standing_person(scale=1.2, offset=(30, 0))
    full = retarget_track([driver], ref, "global", 1.0)[0]
    half = retarget_track([driver], ref, "global", 0.5)[0]
    np.testing.assert_allclose(half.body[:, :2], (driver.body[:, :2] + full.body[:, :2]) / 2)
    assert np.array_equal(retarget_track([driver], ref, "none")[0].body, driver.body)
    assert retarget_track([None, driver], ref, "per_bone")[0] is None
    np.testing.assert_allclose(blend_person(driver, full, 0.0).body, driver.body)
    with pytest.raises(ValueError, match="reference person"):
        retarget_track([driver], None, "per_bone")
    with pytest.raises(ValueError, match="strength"):
        retarget_track([driver], ref, "global", 1.5)


def _mouth_ratio(face: np.ndarray) -> float:
    return np.linalg.norm(face[66, :2] - face[62, :2]) / np.linalg.norm(face[54, :2] - face[48, :2])


def _box(points: np.ndarray) -> np.ndarray:
    return np.r_[points[:, :2].min(0), points[:, :2].max(0)]


def test_face_transfer_keeps_reference_geometry_and_carries_the_mouth_opening():
    ref_face = face_points(np.array([200.0, 150.0]), width=50, mouth_open=2, eye_dist=21)
    drv_face = face_points(np.array([420.0, 330.0]), width=72, mouth_open=15, eye_dist=34)
    anchor = ref_face[30, :2]
    out = transfer_face(drv_face, ref_face, anchor, anchor)
    assert (out[:, 2] > 0).all()
    np.testing.assert_allclose(_box(out[0:17]), _box(ref_face[0:17]), atol=1e-9)   # face outline box
    full_ref, full_out = _box(ref_face), _box(out)
    assert np.abs(full_out - full_ref).max() < 0.05 * (full_ref[3] - full_ref[1])  # the whole 70-point box
    eyes = lambda f: np.linalg.norm(f[42:48, :2].mean(0) - f[36:42, :2].mean(0))  # noqa: E731
    assert eyes(out) == pytest.approx(eyes(ref_face))
    assert _mouth_ratio(out) == pytest.approx(_mouth_ratio(drv_face), rel=1e-9)
    assert _mouth_ratio(out) > 3 * _mouth_ratio(ref_face)


def test_face_transfer_applies_the_drivers_head_roll_and_position():
    ref_face = face_points(np.array([200.0, 150.0]), width=50, mouth_open=2, eye_dist=21)
    drv = face_points(np.array([0.0, 0.0]), width=60, mouth_open=10, eye_dist=25)
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    drv[:, :2] = drv[:, :2] @ rot.T + [400, 300]
    out = transfer_face(drv, ref_face, ref_face[30, :2], np.array([50.0, 60.0]))
    v = out[42:48, :2].mean(0) - out[36:42, :2].mean(0)
    assert np.arctan2(v[1], v[0]) == pytest.approx(0.3, abs=1e-9)
    np.testing.assert_allclose(out[30, :2], [50, 60], atol=1e-9)
    assert _mouth_ratio(out) == pytest.approx(_mouth_ratio(drv), rel=1e-9)


def test_retarget_track_transfers_the_face_in_both_modes():
    ref = standing_person(scale=1.2, offset=(-30, 0))
    driver = standing_person(scale=0.8, offset=(60, 40))
    driver.face = face_points(driver.body[0, :2] + [0, 4], width=44, mouth_open=12, eye_dist=16)
    for mode in ("global", "per_bone"):
        res = retarget_track([driver], ref, mode, 1.0, face_transfer=True)[0]
        np.testing.assert_allclose(_box(res.face[0:17])[2:] - _box(res.face[0:17])[:2],
                                   _box(ref.face[0:17])[2:] - _box(ref.face[0:17])[:2], atol=1e-9)
        assert _mouth_ratio(res.face) == pytest.approx(_mouth_ratio(driver.face), rel=1e-9)
        off = retarget_track([driver], ref, mode, 1.0, face_transfer=False)[0]
        assert _mouth_ratio(off.face) == pytest.approx(_mouth_ratio(driver.face), rel=1e-9)
