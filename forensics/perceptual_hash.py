"""PDQ perceptual hashes: find re-encoded, resized or lightly edited copies of an image.

PDQ (Meta's open perceptual hash, the `pdqhash` bindings) turns an image into
256 bits; copies of one image land within a small Hamming distance (31 is the
threshold Meta's Hasher-Matcher-Actioner uses). Hashes travel as 64 hex
characters in ThreatExchange's order (16-bit words, most significant first),
so they can be shared with other PDQ tools.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PDQ_BITS = 256
PDQ_INPUT_SIZE = (512, 512)  # the reference hasher downsamples to 512 px before its 64x64 filter
# What the scan decodes for it: the 512 px image as luma, which is all PDQ reads (hashes equal the RGB route's
# within 0-2 bits of 256 on the benchmark photographs, at a third of the resize cost).
PDQ_INPUT_SPEC = (*PDQ_INPUT_SIZE, "luma")
MATCH_DISTANCE = 31  # Hamming distance at or under which two PDQ hashes are the same picture
MIN_QUALITY = 50  # under this, PDQ itself calls the hash unreliable (flat or tiny images)
WORDS = PDQ_BITS // 64


@dataclass(frozen=True)
class PerceptualHash:
    hex: str
    quality: int


def pdq_hash(pixels: np.ndarray) -> PerceptualHash:
    """PDQ hash and quality of an RGB (h, w, 3) or grey (h, w) uint8 image."""
    import pdqhash

    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:  # the bindings take RGB only; equal channels give back the same luma
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return PerceptualHash(bits_to_hex(np.asarray(bits)), int(quality))


def bits_to_hex(bits: np.ndarray) -> str:
    """256 bits (bit i = element i) as 64 hex characters, 16-bit word 15 first (ThreatExchange order)."""
    bits = np.asarray(bits, dtype=np.uint32).reshape(16, 16)
    words = (bits << np.arange(16, dtype=np.uint32)).sum(axis=1)
    return "".join(f"{int(word):04x}" for word in words[::-1])


def hex_to_words(hashes) -> np.ndarray:
    """Hex PDQ hashes -> (n, 4) uint64 matrix (for fast XOR + popcount); raises ValueError on a malformed hash."""
    hashes = list(hashes)
    matrix = np.zeros((len(hashes), WORDS), dtype=np.uint64)
    for row, text in enumerate(hashes):
        if not isinstance(text, str) or len(text) != PDQ_BITS // 4:
            raise ValueError(f"not a PDQ hash (64 hex characters): {text!r}")
        value = int(text, 16)
        for word in range(WORDS):
            matrix[row, word] = (value >> (64 * word)) & 0xFFFFFFFFFFFFFFFF
    return matrix


def hamming_distance(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances of two (n, 4) uint64 matrices."""
    return np.bitwise_count(np.bitwise_xor(left, right)).sum(axis=-1, dtype=np.int32)
