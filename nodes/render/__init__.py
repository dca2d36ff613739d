"""Parts of MagicPose Render Video (nodes/render_video.py): the model identity of the resume key, the whole-clip
pose pass and the whole-clip progress bar."""
