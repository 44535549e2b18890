"""Helpers shared by the Yan pipelines."""

import glob
import os

from huggingface_hub import snapshot_download


def shipped_start_frames(name_or_path: str | os.PathLike | None) -> list[str]:
    """Paths of the start images shipped in a model folder (``start_frames/*.png``), sorted; ``[]`` if it has none.

    ``name_or_path`` is a pipeline's ``name_or_path``: a local folder, or a Hub repo id whose files are read from
    the local cache only (never downloaded here). A repo that is not cached, or no name at all, ships none.
    """
    root = name_or_path
    if root and not os.path.isdir(str(root)):
        try:  # a Hub repo id: use the files already in the local cache, never download here
            root = snapshot_download(str(root), allow_patterns=["start_frames/*"], local_files_only=True)
        except Exception:  # not cached, or not a repo id
            return []
    if not root:
        return []
    return sorted(glob.glob(os.path.join(str(root), "start_frames", "*.png")))
