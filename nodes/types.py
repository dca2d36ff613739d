"""Socket types of the pack: the one new type MAGICPOSE_REFERENCE, the model bundle, and POSE_KEYPOINT interop."""
from ._api import io

MagicPoseModelType = io.Custom("MAGICPOSE_MODEL")          # nodes.models.MagicPoseModel
MagicPoseReferenceType = io.Custom("MAGICPOSE_REFERENCE")  # magicpose_core.model.reference.MagicPoseReference
PoseKeypointType = io.Custom("POSE_KEYPOINT")              # comfyui_controlnet_aux: list of OpenPose JSON dicts
