"""MagicPose pose tools: keypoint model, POSE_KEYPOINT interop, mapping, openpose_full rendering, stabilisation,
retargeting and detectors (each optional runtime imported lazily). See docs/pose.md."""
from .detect import DETECTORS, MissingWeightsError, PoseDetector, create_detector
from .keypoints import Person, PoseFrame, frames_to_pose_keypoint, pose_keypoint_to_frames
from .render import render_pose, render_pose_fitted

__all__ = ["DETECTORS", "MissingWeightsError", "PoseDetector", "create_detector", "Person", "PoseFrame",
           "frames_to_pose_keypoint", "pose_keypoint_to_frames", "render_pose", "render_pose_fitted"]
