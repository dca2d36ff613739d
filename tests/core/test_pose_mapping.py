"""MediaPipe / COCO-WholeBody -> OpenPose tables and missing-point rules (docs/pose.md §4)."""
from __future__ import annotations

import numpy as np
import pytest

from magicpose_core.pose.mapping import (
    FACEMESH_TO_IBUG68,
    coco17_to_body18,
    coco_wholebody_to_person,
    mediapipe_to_person,
)


def _coded(n: int, width: int = 1000) -> np.ndarray:
    """Point i at (i + 1, 2 i + 1): the index can be read back from the coordinates."""
    i = np.arange(n, dtype=np.float64)
    return np.stack([i + 1, 2 * i + 1], axis=1)


def test_coco17_matches_dwposes_own_index_formulation():
    """docs/pose.md §4.3: DWPose appends the neck as index 17, then new[[1,2,3,4,6,7,8,9,10,12,13,14,15,16,17]] =
    old[[17,6,8,10,7,9,12,14,16,13,15,2,1,4,3]]; nose and LShoulder (0, 5) stay in place."""
    xy, score = _coded(17), np.linspace(0.5, 0.9, 17)
    body = coco17_to_body18(xy, score, 1000, 1000)
    old = np.concatenate([np.c_[xy, score], [[*(xy[5] + xy[6]) / 2, min(score[5], score[6])]]])  # (18, 3)
    new = old.copy()
    dst = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
    new[dst] = old[[17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]]
    np.testing.assert_allclose(body, new)


def test_neck_needs_both_shoulders_and_offcanvas_points_are_missing():
    xy, score = _coded(17), np.ones(17)
    score[6] = 0.0
    body = coco17_to_body18(xy, score, 1000, 1000)
    assert body[1, 2] == 0 and body[2, 2] == 0 and body[5, 2] == 1
    xy[0] = [-3, 5]
    assert coco17_to_body18(xy, np.ones(17), 1000, 1000)[0, 2] == 0


def test_coco_wholebody_parts_and_pupils():
    xy, score = _coded(133), np.full(133, 0.8)
    p = coco_wholebody_to_person(xy, score, 1000, 1000)
    np.testing.assert_allclose(p.face[:68, :2], xy[23:91])
    np.testing.assert_allclose(p.left_hand[:, :2], xy[91:112])    # subject's left hand = 91-111
    np.testing.assert_allclose(p.right_hand[:, :2], xy[112:133])
    np.testing.assert_allclose(p.face[68, :2], xy[23 + 36:23 + 42].mean(0))  # right pupil = centroid of 36-41
    np.testing.assert_allclose(p.face[69, :2], xy[23 + 42:23 + 48].mean(0))
    score[23 + 40] = 0.0
    assert coco_wholebody_to_person(xy, score, 1000, 1000).face[68, 2] == 0  # incomplete contour: no pupil
    with pytest.raises(ValueError, match="133"):
        coco_wholebody_to_person(xy[:100], score[:100], 1000, 1000)


def test_mediapipe_pose_table():
    pose = np.c_[_coded(33) / 1000, np.full(33, 0.9)]  # normalised, visibility 0.9
    p = mediapipe_to_person(1000, 1000, pose=pose)
    expect = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
    for op, mp in enumerate(expect):
        if mp is None:
            np.testing.assert_allclose(p.body[1, :2], (_coded(33)[11] + _coded(33)[12]) / 2)
        else:
            np.testing.assert_allclose(p.body[op, :2], _coded(33)[mp])
    assert (p.body[:, 2] == 0.9).all()
    assert p.face is None and p.left_hand is None


def test_mediapipe_face_and_hands():
    face = np.c_[np.random.default_rng(0).uniform(0.2, 0.8, (478, 2)), np.zeros(478)]
    hand = np.c_[_coded(21) / 100, np.zeros(21)]
    p = mediapipe_to_person(640, 480, face=face, left_hand=hand, right_hand=None)
    np.testing.assert_allclose(p.face[:68, :2], face[FACEMESH_TO_IBUG68, :2] * [640, 480])
    np.testing.assert_allclose(p.face[68, :2], face[468, :2] * [640, 480])   # iris centres with refine
    np.testing.assert_allclose(p.face[69, :2], face[473, :2] * [640, 480])
    assert p.right_hand is None and (p.left_hand[:, 2] == 1).all()
    p468 = mediapipe_to_person(640, 480, face=face[:468])
    np.testing.assert_allclose(p468.face[68, :2], p468.face[36:42, :2].mean(0))  # no iris: contour centroid
    assert len(set(FACEMESH_TO_IBUG68)) == 68 and max(FACEMESH_TO_IBUG68) < 468
    with pytest.raises(ValueError, match="468 or 478"):
        mediapipe_to_person(640, 480, face=face[:100])
    assert mediapipe_to_person(640, 480) is None
