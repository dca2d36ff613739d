"""The 32-bit watermark payload: a tag naming the pack and the pack's version, whitened.

RivaGAN carries exactly 32 bits, so the payload is packed tightly:

    bits  0-15  tag: the two bytes b"MP" (MagicPose)
    bits 16-19  version major (0-15)
    bits 20-25  version minor (0-63)
    bits 26-31  version patch (0-63)

The 32-bit word is XORed with a fixed mask so that the written bits are close to half ones whatever the
version (a detector's bias towards 0 or 1 on unmarked pictures then cannot look like the payload).
The version comes from the pack's ``pyproject.toml`` (``[project] version``), the one place it is set.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

BITS = 32
TAG = b"MP"
WHITENING = 0x9E3779B9  # fixed 32-bit mask (the golden-ratio constant): 20 of its 32 bits are ones
PACK_NAME = "MagicPose"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# Versions whose payload a check recognises besides the current one: add each released version here.
RELEASED_VERSIONS = ("0.1.0",)


@lru_cache(maxsize=1)
def pack_version() -> str:
    """``[project] version`` of the pack's pyproject.toml (regex: tomllib is 3.11+, the pack supports 3.10)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = re.search(r'^version\s*=\s*"([^"]+)"', section.group(1) if section else "", re.M)
    if found is None:
        raise RuntimeError(f"no [project] version in {PYPROJECT}: the watermark payload needs the pack version")
    return found.group(1)


def version_numbers(version: str) -> tuple[int, int, int]:
    """'1.2.3' (or '1.2.3rc1', '1.2') -> (1, 2, 3), bounded to the payload's 4/6/6-bit fields."""
    parts = [int(m.group(0)) for m in (re.match(r"\d+", p) for p in version.split(".")[:3]) if m]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    if not (0 <= major < 16 and 0 <= minor < 64 and 0 <= patch < 64):
        raise ValueError(f"version {version!r} does not fit the watermark payload (major < 16, minor and patch < 64)")
    return major, minor, patch


def payload_word(version: str) -> int:
    """The 32-bit payload word of ``version`` (before whitening)."""
    major, minor, patch = version_numbers(version)
    return (int.from_bytes(TAG, "big") << 16) | (major << 12) | (minor << 6) | patch


def payload_bits(version: str | None = None) -> np.ndarray:
    """The 32 written bits (uint8 0/1, most significant first) for ``version`` (default: this pack's)."""
    word = payload_word(version or pack_version()) ^ WHITENING
    return np.array([(word >> (BITS - 1 - i)) & 1 for i in range(BITS)], dtype=np.uint8)


def describe_bits(bits: np.ndarray) -> str:
    """Decoded bits as text: 'MagicPose 0.1.0' when the tag reads b"MP", else the raw word in hex."""
    word = int("".join(str(int(b)) for b in np.asarray(bits).reshape(-1)[:BITS]), 2) ^ WHITENING
    if (word >> 16).to_bytes(2, "big") == TAG:
        return f"{PACK_NAME} {(word >> 12) & 0xF}.{(word >> 6) & 0x3F}.{word & 0x3F}"
    return f"unknown payload 0x{word:08x}"


def known_payloads() -> dict[str, np.ndarray]:
    """Name -> bits of every payload a check recognises (this version and the released ones)."""
    versions = dict.fromkeys((pack_version(), *RELEASED_VERSIONS))
    return {f"{PACK_NAME} {v}": payload_bits(v) for v in versions}
