"""The official checkpoint: layout counts, safe loading, exact validation, split, streaming conversion,
convert-on-first-use caching, diffusers-layout weights, and the refusal / error paths.

File-based tests use the tiny random-weight factory file (the official key layout, shrunk UNet widths);
the real-width counts (686 / 698 / 682 / 340 / 2182) are asserted on meta-tensor state dicts of the real
layout, which need no memory.
"""
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from support import factories

from magicpose_core.weights import convert as convert_module
from magicpose_core.weights import hub
from magicpose_core.weights import layout as L
from magicpose_core.weights.convert import CONVERTER_VERSION, DTYPES, convert, split_official, write_safetensors
from magicpose_core.weights.errors import CheckpointError
from magicpose_core.weights.parts import load_parts
from magicpose_core.weights.safe_load import read_state_dict
from magicpose_core.weights.validate import load_official, validate_official

ROOT = Path(__file__).resolve().parents[2]
TINY = factories.TINY_UNET


def meta_state_dict(layout: dict) -> dict[str, torch.Tensor]:
    """A state dict with the layout's keys and shapes and no storage."""
    return {k: torch.empty(s, device="meta", dtype=torch.int64 if L.is_integer_key(k) else torch.float32)
            for k, s in layout.items()}


@pytest.fixture(autouse=True)
def _free_disk(tmp_path):
    """Converted files are hundreds of MB: do not leave them in pytest's retained temp folders."""
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def official_path() -> Path:
    return factories.magicpose_checkpoint()


@pytest.fixture(scope="module")
def official_sd(official_path) -> dict[str, torch.Tensor]:
    return load_official(official_path)


@pytest.fixture(scope="module")
def converted(official_path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    yield convert(official_path, out, dtype="fp16", with_sd15=True)
    shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# layout (docs/method.md §11.2)


def test_real_layout_counts_and_parameters():
    groups = {
        "DDPM": (L.ddpm_layout(), 13, None),
        "main UNet": (L.unet_layout(), 686, 859.52),
        "ACM": (L.appearance_layout(), 698, 860.60),
        "pose ControlNet": (L.controlnet_layout(), 340, 361.28),
        "VAE": (L.vae_layout(), 248, 83.65),
        "CLIP": (L.clip_layout(), 197, 123.06),
    }
    for name, (lay, n, mparams) in groups.items():
        assert len(lay) == n, name
        if mparams is not None:
            assert round(L.count_params(lay) / 1e6, 2) == pytest.approx(mparams, abs=0.005), name
    full = L.official_layout()
    assert len(full) == 2182
    assert round(L.count_params(full) / 1e6, 1) == 2288.1
    assert len(L.appearance_layout(with_hint_block=False)) == 682
    assert len(L.hint_block_layout()) == 16
    assert L.count_params(full) * 4 / 1e9 == pytest.approx(9.15, abs=0.01)  # fp32 bytes: the file size


def test_tiny_layout_keeps_the_real_block_layout():
    """channel_mult (1,1,1,1): same blocks and attention sites; only the two encoder width changes (and so
    their 1x1 skip convs, 4 tensors per UNet) disappear."""
    real, tiny = L.unet_layout(), L.unet_layout(TINY)
    assert set(real) - set(tiny) == {f"input_blocks.{n}.0.skip_connection.{p}"
                                     for n in (4, 7) for p in ("weight", "bias")}
    assert set(tiny) < set(real)
    assert {k.rsplit(".transformer_blocks", 1)[0] for k in tiny if ".attn1.to_q." in k} == \
        {k.rsplit(".transformer_blocks", 1)[0] for k in real if ".attn1.to_q." in k}
    assert round(L.count_params(tiny) / 1e6, 1) == 111.5          # docs/comfyui-integration.md §7.2
    assert round(L.count_params(L.controlnet_layout(TINY)) / 1e6, 1) == 47.6


@pytest.mark.parametrize("cfg,dec", [(L.SD15_UNET, 128), (TINY, 32)], ids=["sd15", "tiny"])
def test_widths_are_read_back(cfg, dec):
    shapes = L.official_layout(cfg, dec)
    assert L.infer_unet_config(shapes, L.MAIN_PREFIX) == cfg
    assert L.infer_unet_config(shapes, L.POSE_PREFIX) == cfg
    assert L.infer_vae_decoder_channels(shapes, L.VAE_PREFIX) == dec
    assert L.infer_unet_config({}, L.MAIN_PREFIX) is None


def test_real_layout_validates_and_splits_682_340():
    sd = meta_state_dict(L.official_layout())
    assert validate_official(sd) == L.SD15_UNET
    parts = split_official(sd)
    assert len(parts.appearance) == 682
    assert len(parts.pose_controlnet) == 340
    assert len(parts.sd15) == 686 + 248 + 196
    assert not any(k.startswith(("out.", "input_hint_block.")) for k in parts.appearance)
    assert all(k.startswith("control_model.") for k in parts.pose_controlnet)
    assert not any(k.endswith("position_ids") for k in parts.sd15)
    assert {k: tuple(v.shape) for k, v in parts.appearance.items()} == L.appearance_layout(with_hint_block=False)
    assert {k: tuple(v.shape) for k, v in parts.pose_controlnet.items()} == \
        L.prefixed("control_model.", L.controlnet_layout())


# --------------------------------------------------------------------------------------------------
# the factory file


def test_factory_file_has_the_official_layout(official_path, official_sd):
    expected = L.official_layout(TINY, factories.TINY_VAE_DECODER)
    assert {k: tuple(v.shape) for k, v in official_sd.items()} == expected
    assert len(official_sd) == len(expected) == 2182 - 3 * 4        # 4 encoder skip convs fewer per UNet
    pos = official_sd[L.CLIP_PREFIX + L.POSITION_IDS]
    assert pos.dtype == torch.int64 and torch.equal(pos, torch.arange(77)[None])
    assert all(v.dtype == torch.float32 for k, v in official_sd.items() if not L.is_integer_key(k))
    # DDPM buffers: the SD1.5 linear schedule (docs/method.md §8.2: alphas_cumprod[0] = 0.99915)
    assert official_sd["betas"][0].item() == pytest.approx(0.00085, rel=1e-6)
    assert official_sd["betas"][-1].item() == pytest.approx(0.012, rel=1e-6)
    assert official_sd["alphas_cumprod"][0].item() == pytest.approx(0.99915, rel=1e-6)
    assert torch.allclose(official_sd["alphas_cumprod"], torch.cumprod(1 - official_sd["betas"].double(), 0).float())
    assert torch.equal(official_sd["logvar"], torch.zeros(1000))


def test_factory_is_deterministic_and_acm_differs(official_sd):
    k = "input_blocks.1.1.transformer_blocks.0.attn1.to_k.weight"
    main, acm = official_sd[L.MAIN_PREFIX + k], official_sd[L.ACM_PREFIX + k]
    assert main.shape == acm.shape and not torch.equal(main, acm)
    assert torch.equal(main, factories.init_tensor(L.MAIN_PREFIX + k, tuple(main.shape)))
    norm = official_sd[L.MAIN_PREFIX + "input_blocks.1.1.norm.weight"]
    assert 0.8 < norm.mean().item() < 1.2 and norm.std().item() < 0.1


def test_sd15_factory_is_the_fp16_cast_of_the_bundled_sd15(official_sd):
    sd15 = load_file(factories.sd15_checkpoint())
    assert set(sd15) == set(L.sd15_checkpoint_layout(TINY, factories.TINY_VAE_DECODER))
    for k, v in sd15.items():
        assert v.dtype == torch.float16
        assert torch.equal(v, official_sd[k].half()), k


# --------------------------------------------------------------------------------------------------
# split and conversion


def test_split_round_trip_on_factory_file(official_sd):
    parts = split_official(official_sd)
    assert len(parts.appearance) == len(L.appearance_layout(TINY, with_hint_block=False)) == 682 - 4
    assert len(parts.pose_controlnet) == len(L.controlnet_layout(TINY)) == 340 - 4
    for k, v in parts.appearance.items():
        assert v is official_sd[L.ACM_PREFIX + k]
    for k, v in parts.pose_controlnet.items():
        assert v is official_sd[L.POSE_PREFIX + k[len("control_model."):]]
    for k, v in parts.sd15.items():
        assert v is official_sd[k]
    used = {L.ACM_PREFIX + k for k in parts.appearance} | {L.POSE_PREFIX + k[14:] for k in parts.pose_controlnet} \
        | set(parts.sd15)
    left = set(official_sd) - used
    assert left == set(L.DDPM_BUFFERS) | {L.CLIP_PREFIX + L.POSITION_IDS} | \
        {L.ACM_PREFIX + k for k in L.hint_block_layout(TINY)}


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_convert_each_dtype_and_reload(official_path, official_sd, dtype, tmp_path):
    seen: list[tuple[int, int]] = []
    paths = convert(official_path, tmp_path, dtype=dtype, progress=lambda d, t: seen.append((d, t)))
    stem = official_path.stem
    assert paths == {"appearance": tmp_path / f"{stem}.appearance.{dtype}.safetensors",
                     "pose_controlnet": tmp_path / f"{stem}.pose_controlnet.{dtype}.safetensors"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no temp files left
    tdt = DTYPES[dtype]
    stat = official_path.stat()
    sha = hashlib.sha256(official_path.read_bytes()).hexdigest()
    for part, prefix in (("appearance", L.ACM_PREFIX), ("pose_controlnet", L.POSE_PREFIX)):
        with safe_open(str(paths[part]), "pt") as f:
            meta = f.metadata()
        assert meta == {"format": "magicpose", "part": part, "source_name": official_path.name,
                        "source_sha256": sha, "source_size": str(stat.st_size),
                        "source_mtime_ns": str(stat.st_mtime_ns), "converter_version": CONVERTER_VERSION,
                        "dtype": dtype, "tensors": meta["tensors"]}
        sd = load_file(paths[part])
        assert int(meta["tensors"]) == len(sd)
        for k, v in sd.items():
            src = official_sd[prefix + (k[len("control_model."):] if part == "pose_controlnet" else k)]
            assert v.dtype == tdt and v.shape == src.shape
            assert torch.equal(v, src.to(tdt)), k
    # progress: monotonic byte counts ending at the total (source hashed + parts written)
    assert seen[-1][0] == seen[-1][1] == stat.st_size + sum(p.stat().st_size for p in paths.values()) - \
        sum(8 + _header_len(p) for p in paths.values())
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def _header_len(path: Path) -> int:
    with open(path, "rb") as f:
        return int.from_bytes(f.read(8), "little")


def test_convert_with_sd15_matches_the_sd15_factory(converted):
    sd15 = load_file(converted["sd15"])
    ref = load_file(factories.sd15_checkpoint())
    assert sd15.keys() == ref.keys()
    for k in ref:
        assert torch.equal(sd15[k], ref[k]), k


def test_streaming_writer_matches_safetensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(3, 5, generator=g), "b.int": torch.arange(7, dtype=torch.int64).reshape(1, 7),
               "c": torch.randn(4, generator=g).to(torch.bfloat16), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 3), "t": torch.randn(6, 4, generator=g).t()}  # non-contiguous
    n = write_safetensors(tmp_path / "x.safetensors", tensors, {"k": "v"}, dtype=torch.float16)
    assert n == (tmp_path / "x.safetensors").stat().st_size
    got = load_file(tmp_path / "x.safetensors")
    assert got.keys() == tensors.keys()
    for k, v in tensors.items():
        want = v.to(torch.float16) if v.is_floating_point() else v
        assert got[k].dtype == want.dtype and torch.equal(got[k], want), k
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"k": "v"}
    write_safetensors(tmp_path / "y.safetensors", tensors, {}, dtype=None)
    assert all(torch.equal(load_file(tmp_path / "y.safetensors")[k], v) for k, v in tensors.items())


# --------------------------------------------------------------------------------------------------
# load_parts: official file converted on first use, cached, invalidated


@pytest.fixture
def official_copy(official_path, tmp_path) -> Path:
    dst = tmp_path / "src" / "model_state-110000.th"
    dst.parent.mkdir()
    shutil.copyfile(official_path, dst)
    yield dst
    shutil.rmtree(tmp_path / "src", ignore_errors=True)


def _converting(caplog) -> int:
    return sum("converting" in r.getMessage() for r in caplog.records)


def test_convert_on_first_use_then_cached_then_invalidated(official_copy, official_sd, caplog):
    caplog.set_level(logging.INFO, logger="MagicPose")
    parts = load_parts(official_copy, dtype="fp16")
    assert _converting(caplog) == 1
    app_file = official_copy.with_name("model_state-110000.appearance.fp16.safetensors")
    pose_file = official_copy.with_name("model_state-110000.pose_controlnet.fp16.safetensors")
    assert app_file.is_file() and pose_file.is_file()
    assert parts.source == official_copy and parts.metadata["part"] == "appearance"
    assert len(parts.appearance) == 678 and len(parts.pose_controlnet) == 336
    k = "output_blocks.11.1.transformer_blocks.0.norm1.weight"
    assert torch.equal(parts.appearance[k], official_sd[L.ACM_PREFIX + k].half())
    first_mtime = app_file.stat().st_mtime_ns

    again = load_parts(official_copy, dtype="fp16")            # reused: no conversion, files untouched
    assert _converting(caplog) == 1
    assert app_file.stat().st_mtime_ns == first_mtime
    assert all(torch.equal(again.appearance[k], v) for k, v in parts.appearance.items())

    st = official_copy.stat()
    os.utime(official_copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # touching the source invalidates
    load_parts(official_copy, dtype="fp16")
    assert _converting(caplog) == 2
    with safe_open(str(app_file), "pt") as f:
        assert f.metadata()["source_mtime_ns"] == str(st.st_mtime_ns + 10**9)

    load_parts(official_copy, dtype="bf16")                     # another dtype is another cache entry
    assert _converting(caplog) == 3
    assert official_copy.with_name("model_state-110000.appearance.bf16.safetensors").is_file()


def test_read_only_folder_uses_cache_dir(official_copy, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="MagicPose")
    cache = tmp_path / "cache"
    real_writable = convert_module._writable
    monkeypatch.setattr(convert_module, "_writable",
                        lambda d: Path(d) != official_copy.parent and real_writable(Path(d)))
    with pytest.raises(CheckpointError, match="not writable"):
        load_parts(official_copy)
    parts = load_parts(official_copy, cache_dir=cache)
    assert (cache / "model_state-110000.appearance.fp16.safetensors").is_file()
    assert not official_copy.with_name("model_state-110000.appearance.fp16.safetensors").exists()
    assert len(parts.appearance) == 678
    load_parts(official_copy, cache_dir=cache)
    assert _converting(caplog) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_really_read_only(official_copy, tmp_path):
    official_copy.parent.chmod(0o555)
    try:
        parts = load_parts(official_copy, cache_dir=tmp_path / "cache")
        assert len(parts.pose_controlnet) == 336
    finally:
        official_copy.parent.chmod(0o755)


# --------------------------------------------------------------------------------------------------
# load_parts: converted parts and diffusers layout


def test_converted_part_finds_its_sibling(converted):
    a = load_parts(converted["appearance"])
    p = load_parts(converted["pose_controlnet"])
    ref_a, ref_p = load_file(converted["appearance"]), load_file(converted["pose_controlnet"])
    for parts in (a, p):
        assert parts.appearance.keys() == ref_a.keys() and parts.pose_controlnet.keys() == ref_p.keys()
        assert all(torch.equal(parts.appearance[k], v) for k, v in ref_a.items())
        assert all(torch.equal(parts.pose_controlnet[k], v) for k, v in ref_p.items())
    assert a.metadata["format"] == "magicpose"


def test_missing_sibling_is_named_and_search_dirs_find_it(converted, tmp_path):
    lone = tmp_path / "magicpose" / converted["appearance"].name
    lone.parent.mkdir()
    os.symlink(converted["appearance"], lone)
    with pytest.raises(CheckpointError) as e:
        load_parts(lone)
    assert converted["pose_controlnet"].name in str(e.value) and "not found" in str(e.value)
    parts = load_parts(lone, search_dirs=[converted["pose_controlnet"].parent])
    assert len(parts.pose_controlnet) == 336


def test_sd15_part_is_not_a_magicpose_model(converted):
    with pytest.raises(CheckpointError, match="Load Checkpoint"):
        load_parts(converted["sd15"])


def _to_diffusers(converted) -> tuple[dict, dict]:
    app = load_file(converted["appearance"])
    pose = {k[len("control_model."):]: v for k, v in load_file(converted["pose_controlnet"]).items()}
    return factories.ldm_to_diffusers(app), factories.ldm_to_diffusers(pose)


def test_diffusers_layout_parts_accepted(converted, tmp_path):
    app, pose = _to_diffusers(converted)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight" in app
    assert "controlnet_cond_embedding.conv_in.weight" in pose
    # a full diffusers UNet (with the unused conv_norm_out / conv_out head) is accepted as the appearance net
    app["conv_norm_out.weight"] = torch.ones(320, dtype=torch.float16)
    app["conv_norm_out.bias"] = torch.zeros(320, dtype=torch.float16)
    save_file(app, tmp_path / "mp.appearance.safetensors")
    save_file(pose, tmp_path / "mp.pose_controlnet.safetensors")
    parts = load_parts(tmp_path / "mp.appearance.safetensors")
    ref_a, ref_p = load_file(converted["appearance"]), load_file(converted["pose_controlnet"])
    assert parts.appearance.keys() == ref_a.keys() and parts.pose_controlnet.keys() == ref_p.keys()
    assert all(torch.equal(parts.appearance[k], v) for k, v in ref_a.items())
    assert all(torch.equal(parts.pose_controlnet[k], v) for k, v in ref_p.items())


def test_diffusers_folder_accepted(converted, tmp_path):
    app, pose = _to_diffusers(converted)
    for sub, sd in (("appearance_control_model", app), ("pose_control_model", pose)):
        (tmp_path / sub).mkdir()
        save_file(sd, tmp_path / sub / "diffusion_pytorch_model.safetensors")
    parts = load_parts(tmp_path)
    assert parts.source == tmp_path and parts.metadata["layout"] == "diffusers"
    ref = load_file(converted["pose_controlnet"])
    assert all(torch.equal(parts.pose_controlnet[k], v) for k, v in ref.items())
    (tmp_path / "pose_control_model" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="pose subfolder"):
        load_parts(tmp_path)


def test_mismatched_pair_rejected(converted, tmp_path):
    """An appearance part next to a pose part of another width is refused, not silently combined."""
    os.symlink(converted["appearance"], tmp_path / "x.appearance.safetensors")
    small = L.UNetConfig(model_channels=64, channel_mult=(1, 1, 1, 1))
    save_file({"control_model." + k: torch.zeros(s) for k, s in L.controlnet_layout(small).items()},
              tmp_path / "x.pose_controlnet.safetensors")
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_parts(tmp_path / "x.appearance.safetensors")


# --------------------------------------------------------------------------------------------------
# refusals and wrong files


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch_zip", "bare_pickle"])
def test_malicious_pickle_refused_without_running_it(tmp_path, torch_format):
    sentinel = tmp_path / "pwned"
    path = factories.malicious_pickle(tmp_path / "model_state-110000.th", sentinel, torch_format=torch_format)
    for call in (load_official, load_parts, read_state_dict):
        with pytest.raises(CheckpointError) as e:
            call(path)
        msg = str(e.value)
        assert "refused" in msg and "code execution" in msg and "plain tensors" in msg
        assert "open" in msg  # names what it would have called
    assert not sentinel.exists()


def test_truncated_checkpoint(official_path, tmp_path):
    path = tmp_path / "model_state-110000.th"
    with open(official_path, "rb") as f:
        path.write_bytes(f.read(10 << 20))
    with pytest.raises(CheckpointError, match="truncated"):
        load_official(path)
    with pytest.raises(CheckpointError, match="truncated"):
        load_parts(path)


def test_truncated_safetensors_part(converted, tmp_path):
    for part in ("appearance", "pose_controlnet"):
        src = converted[part]
        with open(src, "rb") as f:
            (tmp_path / src.name).write_bytes(f.read(src.stat().st_size // 2))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_parts(tmp_path / converted["appearance"].name)


@pytest.mark.parametrize("content,match", [
    (bytes(range(1, 256)) * 16, "not a PyTorch checkpoint"),
    (b"hello, this is a text file\n", "not a PyTorch checkpoint"),
    (b"", "empty"),
], ids=["junk", "text", "empty"])
def test_non_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "model_state-110000.th"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_official(path)


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_parts(tmp_path / "model_state-110000.th")
    assert "model_state-110000.th" in str(e.value) and str(tmp_path) in str(e.value) and "download" in str(e.value)


def test_plain_sd15_checkpoint_is_named_as_such():
    path = factories.sd15_checkpoint()
    with pytest.raises(CheckpointError) as e:
        load_official(path)
    msg = str(e.value)
    assert path.name in msg and "plain SD1.5 checkpoint" in msg
    assert "missing" in msg and "appearance_control_model.*" in msg and "pose_control_model.*" in msg
    assert "appearance_control_model.time_embed.0.weight" in msg       # the first missing keys are quoted
    assert "DDPM buffers 13" in msg


def test_controlnet_only_file(tmp_path):
    small = L.UNetConfig(model_channels=32, channel_mult=(1, 1, 1, 1), context_dim=768)
    sd = {"control_model." + k: torch.zeros(s) for k, s in L.controlnet_layout(small).items()}
    path = tmp_path / "control_v11p_sd15_openpose.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_official(path)
    msg = str(e.value)
    assert "a ControlNet (ldm layout" in msg and "missing" in msg and "unexpected" in msg
    assert "control_model.time_embed.0.weight" in msg
    with pytest.raises(CheckpointError, match="a ControlNet"):
        load_parts(path)


def test_wrong_shape_missing_and_unexpected_keys_are_listed():
    sd = meta_state_dict(L.official_layout(TINY, 32))
    sd[L.POSE_PREFIX + "input_hint_block.0.weight"] = torch.empty(16, 4, 3, 3, device="meta")
    del sd[L.ACM_PREFIX + "time_embed.0.bias"]
    sd["model_ema.decay"] = torch.empty((), device="meta")
    with pytest.raises(CheckpointError) as e:
        validate_official(sd, "x.th")
    msg = str(e.value)
    assert ("wrong shape 1: pose_control_model.input_hint_block.0.weight expected (16, 3, 3, 3) "
            "found (16, 4, 3, 3)") in msg
    assert "missing 1 (appearance_control_model.* 1): appearance_control_model.time_embed.0.bias" in msg
    assert "unexpected 1 (model_ema.* 1): model_ema.decay" in msg


def test_non_tensor_entries_rejected(tmp_path):
    path = tmp_path / "m.th"
    torch.save({"model.diffusion_model.x": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match=r"not a plain state dict of tensors.*epoch \(int\)"):
        load_official(path)


def test_unnamed_safetensors_explains_the_naming(converted, tmp_path):
    path = tmp_path / "acm.safetensors"
    os.symlink(converted["appearance"], path)
    with pytest.raises(CheckpointError, match="STEM.appearance.DTYPE.safetensors"):
        load_parts(path)


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "magicpose_core.checkpoint", *args], capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=600)


def test_cli_inspect_and_convert(official_path, tmp_path):
    r = _cli("inspect", str(official_path))
    assert r.returncode == 0, r.stderr
    assert "the official MagicPose checkpoint" in r.stdout and "valid" in r.stdout
    assert "pose_control_model.*" in r.stdout and " 336" in r.stdout and "DDPM buffers" in r.stdout

    r = _cli("convert", str(official_path), str(tmp_path), "--dtype", "bf16")
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr                                     # text progress bar on stderr
    out = tmp_path / f"{official_path.stem}.appearance.bf16.safetensors"
    assert out.is_file() and str(out) in r.stdout
    r = _cli("inspect", str(out))
    assert r.returncode == 0 and "MagicPose appearance part (valid)" in r.stdout and "BF16 678" in r.stdout

    bad = tmp_path / "junk.th"
    bad.write_bytes(b"\x01\x02" * 50)
    r = _cli("convert", str(bad), str(tmp_path))
    assert r.returncode == 1 and "error:" in r.stderr and "not a PyTorch checkpoint" in r.stderr


def _documented_convert_command() -> list[str]:
    """The one convert command as README.md gives it (the code block after "The one convert command"), checked
    to be run the way README says: in the pack's folder inside ComfyUI/custom_nodes, with ComfyUI's Python."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"The one convert command(?P<how>.*?)```bash\n(?P<cmd>.*?)\n```", text, re.S)
    assert m, "README.md has no code block after 'The one convert command'"
    how = " ".join(m["how"].split())
    assert "run in this pack's folder (`ComfyUI/custom_nodes/<this pack>`)" in how, how
    assert "with the Python that runs ComfyUI" in how, how
    assert "\n" not in m["cmd"].strip(), m["cmd"]
    return shlex.split(m["cmd"])


def test_documented_convert_command_runs_literally_in_the_pack_folder(official_path, converted, tmp_path):
    """README's convert command, word for word, in a pack folder inside a ComfyUI tree, with the official file
    where README says to save it: it writes the parts next to it and the SD1.5 checkpoint the workflows load, and
    they equal what the in-process converter writes. The pack is a copy of magicpose_core (a linked pack resolves
    to this checkout, outside any ComfyUI tree); the official file is the tiny factory file, linked."""
    argv = _documented_convert_command()
    assert " ".join(argv) == hub.CONVERT_COMMAND                  # what errors and workflow notes tell users
    assert argv[0] == "python"                                     # ComfyUI's Python: this venv's
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    pack = comfy / "custom_nodes" / ROOT.name
    shutil.copytree(ROOT / "magicpose_core", pack / "magicpose_core", ignore=shutil.ignore_patterns("__pycache__"))
    models = comfy / "models" / "magicpose"
    models.mkdir()
    (models / hub.LOCAL_FILENAME).symlink_to(official_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # the pack folder alone makes -m work
    r = subprocess.run([sys.executable, *argv[1:]], cwd=pack, env={**env, "HF_HUB_OFFLINE": "1"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr

    stem = Path(hub.LOCAL_FILENAME).stem
    written = {"appearance": models / f"{stem}.appearance.fp16.safetensors",
               "pose_controlnet": models / f"{stem}.pose_controlnet.fp16.safetensors",
               "sd15": comfy / "models" / "checkpoints" / hub.SD15_FILENAME}
    for part, path in written.items():
        assert f"{part}: {path}" in r.stdout, r.stdout
        assert _tensor_bytes(path) == _tensor_bytes(converted[part]), part
        meta, ref_meta = _st_metadata(path), _st_metadata(converted[part])
        assert meta.pop("source_name") == hub.LOCAL_FILENAME and ref_meta.pop("source_name") == official_path.name
        assert meta == ref_meta, part
    parts = load_parts(written["appearance"])                     # what MagicPose Load Model does with it
    assert parts.pose_controlnet.keys() == load_file(written["pose_controlnet"]).keys()


def test_every_user_facing_text_gives_the_documented_convert_command():
    """Node help pages, workflow notes and README prose name the convert command exactly as README's code block."""
    cmd = " ".join(_documented_convert_command())
    files = [ROOT / "README.md", *sorted((ROOT / "web" / "docs").glob("*.md")), *sorted(ROOT.glob("workflows/*.json"))]
    seen = set()
    for path in files:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)   # code blocks: the test above runs README's
        for m in re.finditer(r"`([^`]*magicpose_core\.checkpoint convert[^`]*)`", text):
            assert m[1] == cmd, f"{path.relative_to(ROOT)}: {m[1]!r}"
            seen.add(path.name)
    assert "MagicPoseLoadModel.md" in seen and len([n for n in seen if n.endswith(".json")]) >= 4, seen


def _st_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata())


def _tensor_bytes(path: Path) -> tuple[str, str]:
    """(tensor table without metadata, SHA-256 of the tensor data) of a safetensors file."""
    n = _header_len(path)
    with open(path, "rb") as f:
        f.seek(8)
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        digest = hashlib.sha256()
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return json.dumps(header, sort_keys=True), digest.hexdigest()
