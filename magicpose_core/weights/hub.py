"""The official MagicPose weights on the Hugging Face hub: an explicit, opt-in download and the
"where do I put the file" message.

The final model is `model_state-110000.th` (9.15 GB, fp32, a pickle of plain tensors) in the HF repository
`Boese0601/MagicDance` (docs/method.md §11.1; MagicPose, ICML 2024, arXiv 2311.12052). Nothing here
runs at import time and huggingface_hub is imported only inside `download_official`, which is called only
when the user asks (the CLI `download` command, or a loader option that is off by default).
`HF_HUB_OFFLINE` is honoured with a clear error. The weights' licence tag is "cc" with no variant:
treat them as research-only and do not redistribute them (docs/method.md §2).
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable

log = logging.getLogger("MagicPose")

REPO_ID = "Boese0601/MagicDance"
FILENAME = "model_state-110000.th"
# The name the pack gives the same file on disk. ComfyUI's frontend treats only .safetensors/.ckpt/.pt/.pth/.bin/
# .sft/.onnx/.gguf values as model files (missing-models scan) and offers a download only for .safetensors/.sft/
# .ckpt/.pth/.pt names, so the shipped workflows name it .pth; the loader reads .th and .pth alike.
LOCAL_FILENAME = "model_state-110000.pth"
APPROX_BYTES = 9_150_000_000  # docs/method.md §11.1 (2288.1 M fp32 parameters)
URL = f"https://huggingface.co/{REPO_ID}/blob/main/{FILENAME}"
DOWNLOAD_URL = f"https://huggingface.co/{REPO_ID}/resolve/main/{FILENAME}"  # workflow model metadata
FOLDER_NAME = "magicpose"     # ComfyUI models/<FOLDER_NAME>/ (registered by the glue through folder_paths)
SD15_FILENAME = "model_state-110000.sd15.fp16.safetensors"  # the bundled SD1.5, written by CONVERT_COMMAND
# The one convert command (README, workflow notes, error messages): run in the pack's folder with the Python that
# runs ComfyUI; without arguments it reads models/magicpose/model_state-110000.pth (or .th) and writes the parts
# there and the SD1.5 checkpoint to models/checkpoints.
CONVERT_COMMAND = "python -m magicpose_core.checkpoint convert"
_TRUE = {"1", "true", "yes", "on"}


class HubError(RuntimeError):
    """The official weights could not be downloaded; the message says what to do instead."""

    __module__ = "magicpose_core.weights.hub"  # ComfyUI shows module + name; the pack's own module name is a path


def convert_instructions() -> str:
    """How to run CONVERT_COMMAND, naming the pack folder (not a full path)."""
    pack = Path(os.path.abspath(__file__)).parents[2].name  # the folder name ComfyUI loaded (a link's own name)
    return f"`{CONVERT_COMMAND}` in ComfyUI's custom_nodes/{pack} folder, with the Python that runs ComfyUI"


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (read from the environment now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def default_model_dir() -> Path:
    """ComfyUI's models/magicpose when this pack sits in ComfyUI/custom_nodes/, else the current folder."""
    comfy_root = Path(__file__).resolve().parents[4]  # weights/ < magicpose_core/ < pack/ < custom_nodes/ < ComfyUI
    if (comfy_root / "main.py").is_file() and (comfy_root / "models").is_dir():
        return comfy_root / "models" / FOLDER_NAME
    return Path.cwd()


def download_command(folder: str | os.PathLike) -> str:
    return f"python -m magicpose_core.checkpoint download --dir {folder}"


def missing_weights_message(folder: str | os.PathLike = "models/magicpose") -> str:
    """What to put where when no MagicPose weights are found in `folder` (ComfyUI's models/magicpose by default:
    messages shown in the UI name folders as ComfyUI does, never by machine path)."""
    folder = str(folder)
    return (
        f"MagicPose weights not found. Download the official {FILENAME} (~9.15 GB, {URL}) and save it in {folder} "
        f"as {LOCAL_FILENAME} (the same file; ComfyUI's model dialogs only know the .pth suffix), or select "
        f"'{download_choice()}' in MagicPose Load Model with its download option on. Then, once, for faster loads "
        f"and the SD1.5 checkpoint the workflows use ({SD15_FILENAME}), run {convert_instructions()}."
    )


def download_choice() -> str:
    """The Load Model entry that downloads the official file (listed only while it is missing)."""
    return f"download {LOCAL_FILENAME} (9.15 GB)"


def _progress_tqdm(progress: Callable[[int, int], None]):
    """A tqdm class that forwards byte counts to `progress(done, total)` (huggingface_hub's tqdm_class hook)."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def update(self, n=1):
            out = super().update(n)
            if self.total:
                progress(int(self.n), int(self.total))
            return out

    return _Forward


def download_official(dest_dir: str | os.PathLike | None = None, progress: Callable[[int, int], None] | None = None,
                      force: bool = False) -> Path:
    """Fetch `model_state-110000.th` into `dest_dir` (default: `default_model_dir()`) and return its path.

    An existing file there is returned as is (no network access). Raises HubError when offline, when
    huggingface_hub is missing, when the disk is too small, or when the download fails.
    """
    dest = Path(dest_dir) if dest_dir is not None else default_model_dir()
    target = dest / LOCAL_FILENAME
    for present in (target, dest / FILENAME):
        if present.is_file() and not force:
            log.info("MagicPose: %s already present, not downloading", present)
            return present
    if is_offline():
        raise HubError(f"HF_HUB_OFFLINE is set, so MagicPose will not download {FILENAME}. "
                       f"Put the file in {dest} yourself ({URL}), or unset HF_HUB_OFFLINE and run "
                       f"`{download_command(dest)}`.")
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if free < APPROX_BYTES * 1.05:
        raise HubError(f"not enough free disk space in {dest} for {FILENAME}: {free / 1e9:.1f} GB free, "
                       f"~{APPROX_BYTES / 1e9:.2f} GB needed")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise HubError("downloading needs huggingface_hub: `pip install huggingface_hub` "
                       f"(or fetch {URL} by hand into {dest})") from e
    log.info("MagicPose: downloading %s from %s into %s (~%.2f GB)", FILENAME, REPO_ID, dest, APPROX_BYTES / 1e9)
    kwargs = {"tqdm_class": _progress_tqdm(progress)} if progress is not None else {}
    try:
        path = hf_hub_download(repo_id=REPO_ID, filename=FILENAME, local_dir=str(dest), force_download=force,
                               **kwargs)
    except Exception as e:  # huggingface_hub raises many types (offline, HTTP, disk); all get the same advice
        reason = str(e).strip().rstrip(".")
        raise HubError(f"could not download {FILENAME} from {REPO_ID}: {type(e).__name__}: {reason}. "
                       f"Download {URL} by hand into {dest}.") from e
    os.replace(path, target)  # the hub's .th under the name the workflows use
    return target


# --- small auxiliary files (DWPose's ONNX pair): quick probe, then huggingface_hub's own download -----------------

PROBE_TIMEOUT = 5.0  # s for the one HEAD request that decides whether the hub is reachable at all


def _probe(url: str, timeout: float) -> None:
    """One HEAD request (huggingface_hub's get_hf_file_metadata, no retries) under a hard deadline.

    huggingface_hub retries a failed metadata request for a file it has not cached (5 retries, 1-8 s apart,
    then a 60 s time-out: ~25 s on a machine without network, minutes behind a firewall that drops packets),
    and name resolution is not bounded by its time-out at all; a thread with a deadline bounds all of it.
    """
    import threading

    from huggingface_hub import get_hf_file_metadata

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            get_hf_file_metadata(url, timeout=timeout)
            outcome.append(None)
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    t = threading.Thread(target=run, name="magicpose-hub-probe", daemon=True)  # a hung lookup never blocks exit
    t.start()
    t.join(timeout + 1.0)
    if not outcome:
        raise HubError(f"no answer from {url.split('/', 3)[2]} within {timeout:.0f} s")
    if outcome[0] is not None:
        raise outcome[0]


def fetch_files(repo_id: str, filenames: list[str] | tuple[str, ...], dest: str | os.PathLike,
                progress: Callable[[int, int], None] | None = None, timeout: float = PROBE_TIMEOUT) -> list[Path]:
    """Download `filenames` of the model repository `repo_id` into `dest` (files already there are kept) and return
    their paths. Honours HF_HUB_OFFLINE and HF_ENDPOINT (read now, not at import); one quick probe first so that an
    offline machine fails within `timeout` seconds; then huggingface_hub's download with its console progress bar
    (and `progress(done, total)` per file). Raises HubError with the reason; nothing partial is left in `dest`
    (huggingface_hub writes to a temporary file and renames it when complete)."""
    dest = Path(dest)
    targets = [dest / f for f in filenames]
    missing = [f for f, t in zip(filenames, targets) if not t.is_file()]
    if not missing:
        return targets
    if is_offline():
        raise HubError("HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import hf_hub_download, hf_hub_url
    except ImportError:
        raise HubError("huggingface_hub is not installed (`pip install huggingface_hub`)") from None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        _probe(hf_hub_url(repo_id, missing[0], endpoint=endpoint), timeout)
    except HubError:
        raise
    except Exception as e:  # connection refused, DNS failure, HTTP errors: the hub is not usable from here
        raise HubError(f"the hub is not reachable ({type(e).__name__}: {str(e).strip()[:200]})") from None
    dest.mkdir(parents=True, exist_ok=True)
    kwargs = {"tqdm_class": _progress_tqdm(progress)} if progress is not None else {}
    for f in missing:
        log.info("MagicPose: downloading %s from %s into %s", f, repo_id, dest)
        try:
            hf_hub_download(repo_id=repo_id, filename=f, local_dir=str(dest), endpoint=endpoint, **kwargs)
        except Exception as e:  # any hub/network/disk error: the caller reports the manual route
            raise HubError(f"the download of {f} from {repo_id} failed ({type(e).__name__}: "
                           f"{str(e).strip()[:200]})") from None
    return targets
