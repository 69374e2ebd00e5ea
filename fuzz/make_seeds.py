#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/corpus/<target>/ (run once; the files are committed)."""
import hashlib, json, os, struct
base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
def frame(t, p): return bytes([t]) + struct.pack(">I", len(p)) + p
h = hashlib.sha256(b"hello").hexdigest()
meta = frame(1, json.dumps({"name": "a.txt", "size": 5, "hash": h}, separators=(",", ":")).encode())
golden = meta + frame(2, b"hello") + frame(3, b"") + frame(4, b"") + frame(4, b'{"ok":true}') + frame(5, b"hash mismatch") + frame(6, b"disk full")
fd = {
    "golden_whole": bytes([0]) + golden,
    "golden_split": bytes([3, 0, 1, 6]) + golden,
    "unknown_type": bytes([1, 2]) + frame(2, b"ab") + b"\x07\x00",
    "too_long": bytes([0]) + b"\x02\x00\x01\x00\x01",
    "truncated": bytes([2, 4, 9]) + frame(2, b"abcdef")[:-2],
    "bad_meta": bytes([0]) + frame(1, b'{"name":"a","size":-1}'),
}
for name, data in fd.items():
    open(os.path.join(base, "frame_decoder", name), "wb").write(data)

def content(size, seed): return bytes((((i & 0xff) * seed) + seed) & 0xff for i in range(size))
def honest(size, seed, flags=0):
    p = bytes([size & 0xff, size >> 8, seed, flags, 0])
    for _ in range(size // 256 + 1): p += bytes([2, 255])
    return p + bytes([5, 9])
rx = {
    "honest_0": honest(0, 1),
    "honest_5": honest(5, 7),
    "honest_1000": honest(1000, 3, 2),
    "too_large": honest(100, 9, 1),
    "corrupt_data": bytes([8, 0, 3, 0, 0, 4, 8]) + bytes(8) + bytes([5, 9]),
    "meta_mismatch": bytes([10, 0, 1, 0, 1, 1, 2, 10, 5]),
    "timeout": bytes([10, 0, 1, 0, 0, 11, 15, 11, 15, 2, 20]),
    "out_of_order": bytes([10, 0, 1, 0, 5, 0, 6, 7, 8]),
    "commit_fail": bytes([4, 0, 2, 0, 0, 2, 10, 5, 10, 9]),
}
# Raw wire bytes through the decoder (op 14): META for a 4-byte file with seed 5, its DATA, DONE.
c = content(4, 5)
wire = frame(1, json.dumps({"name": "file.bin", "size": 4, "hash": hashlib.sha256(c).hexdigest()}, separators=(",", ":")).encode())
wire += frame(2, c) + frame(3, b"")
p = bytes([4, 0, 5, 0])
i = 0
while i < len(wire):
    chunk = wire[i:i + 63]; i += 63
    p += bytes([14, len(chunk)]) + chunk
rx["wire_bytes"] = p + bytes([9])
for name, data in rx.items():
    open(os.path.join(base, "receiver", name), "wb").write(data)
