"""Label Studio's brush RLE: the `value.rle` list of a `brushlabels` result.

The code is @thi.ng/rle-pack's bit-packed run-length format (what Label Studio's editor writes and reads), applied
to the region drawn as an RGBA image and flattened row-major: H * W * 4 bytes, the mask in the alpha channel (the
editor copies alpha into R, G and B; any non-zero alpha is the region). Bit stream, most significant bit first:

  32 bits  number of values        5 bits  word size - 1        4 x 4 bits  run-length field sizes - 1
  then records: 1 bit repeat flag, 2 bits size index t, rle_sizes[t] bits n, then
    flag 1: one word repeated n + 1 times;   flag 0: n + 1 literal words
zero-padded to whole bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RLE_SIZES = (3, 4, 8, 16)  # rle-pack's defaults, which Label Studio uses


def encode_rle(values: np.ndarray, word_size: int = 8, rle_sizes: Sequence[int] = RLE_SIZES) -> list[int]:
    """1-D integer array -> packed bytes as a list of ints, byte for byte what rle-pack's encodeBinary writes."""
    values = np.asarray(values).ravel()
    if not 1 <= word_size <= 32 or len(rle_sizes) != 4 or not all(1 <= s <= 16 for s in rle_sizes):
        raise ValueError("word size must lie in 1..32 and the four run-length sizes in 1..16 bits")
    if values.size and (values.min() < 0 or int(values.max()) >> word_size):
        raise ValueError(f"values must fit in {word_size} bits")
    limits = [1 << s for s in rle_sizes]
    bits = [f"{values.size:032b}", f"{word_size - 1:05b}", *(f"{s - 1:04b}" for s in rle_sizes)]

    def field(n: int) -> str:  # size index and length field of a count n (= run length - 1)
        t = next(k for k, lim in enumerate(limits) if n < lim)
        return f"{t:02b}" + format(n, f"0{rle_sizes[t]}b")

    chunk: list[int] = []  # pending literal words

    def flush() -> None:
        if chunk:
            bits.append("0" + field(len(chunk) - 1) + "".join(format(v, f"0{word_size}b") for v in chunk))
            chunk.clear()

    # runs of equal values: starts, lengths, values
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else np.zeros(0, int)
    lengths = np.diff(np.r_[starts, values.size])
    last = len(starts) - 1
    for k, (v, length) in enumerate(zip(values[starts].tolist(), lengths.tolist(), strict=True)):
        if length == 1:
            if k == last and not chunk:  # rle-pack ends on a one-value repeat record, not a literal
                bits.append("1" + field(0) + format(v, f"0{word_size}b"))
                break
            chunk.append(v)
            if len(chunk) == limits[3]:
                flush()
            continue
        flush()
        while length > 1:  # repeat records hold at most 2**rle_sizes[3] values
            n = min(length, limits[3])
            bits.append("1" + field(n - 1) + format(v, f"0{word_size}b"))
            length -= n
        if length == 1:  # one value left over joins the literals, as in rle-pack
            chunk.append(v)
    if chunk:
        flush()
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    return list(int(s, 2).to_bytes(len(s) // 8, "big"))


def decode_rle(rle: Sequence[int], expected: int | None = None) -> np.ndarray:
    """Packed bytes -> 1-D array (uint8 for word sizes up to 8 bits). `expected`: the value count the caller
    needs (checked before anything is allocated). ValueError on a malformed stream."""
    data = np.asarray(rle, dtype=np.int64)
    if data.ndim != 1 or data.size < 7 or data.min() < 0 or data.max() > 255:
        raise ValueError("brush RLE must be a list of at least 7 byte values (0..255)")
    bits = (np.unpackbits(data.astype(np.uint8)) + ord("0")).tobytes().decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise ValueError("brush RLE ends early")
        pos += n
        return int(bits[pos - n : pos], 2)

    num, word_size = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    if expected is not None and num != expected:
        raise ValueError(f"brush RLE holds {num} values, expected {expected}")
    out = np.zeros(num, dtype=np.uint8 if word_size <= 8 else np.uint16 if word_size <= 16 else np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError(f"brush RLE run passes the end ({j} > {num} values)")
        if repeat:
            out[i:j] = read(word_size)
        else:
            out[i:j] = [read(word_size) for _ in range(j - i)]
        i = j
    return out


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """bool (H, W) -> Label Studio brush RLE (255 in all four RGBA channels on the mask, as the editor writes)."""
    return encode_rle(np.repeat(np.asarray(mask, bool).ravel().astype(np.uint8) * 255, 4))


def brush_rle_to_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> bool (H, W): pixels with non-zero alpha, as the editor shows them."""
    return decode_rle(rle, expected=height * width * 4).reshape(height, width, 4)[:, :, 3] > 0
