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

# receiver_external_hash: the honest programs with op 16 (the caller's hash) before the commit,
# and one with a wrong hash (op 17).
def honest_ext(size, seed, flags=0):
    return honest(size, seed, flags)[:-1] + bytes([16, 9])
rxe = {
    "honest_0": honest_ext(0, 1),
    "honest_5": honest_ext(5, 7),
    "honest_1000": honest_ext(1000, 3, 2),
    "no_hash": honest(5, 7),
    "wrong_hash": honest(5, 7)[:-1] + bytes([17]) + bytes(32) + bytes([9]),
    "hash_early": bytes([10, 0, 1, 0, 0, 16, 2, 20, 5, 16, 9]),
}

def w(target, items):
    d = os.path.join(base, target)
    os.makedirs(d, exist_ok=True)
    for name, data in items.items():
        open(os.path.join(d, name), "wb").write(data)

w("receiver_external_hash", rxe)

# compact_encoding: [program length][op, arg]* then the bytes to read.
def ce(ops, data): return bytes([len(ops)]) + b"".join(bytes(o) for o in ops) + data
w("compact_encoding", {
    "uints": ce([(4, 0), (4, 0), (4, 0), (5, 0)], b"\x05\xfd\x01\x02\xfe\x01\x02\x03\x04\xff" + bytes(8)),
    "buffers": ce([(7, 0), (8, 0), (6, 0)], b"\x03abc\x02hi" + bytes(32)),
    "arrays": ce([(10, 5), (11, 5), (9, 40)], b"\x01" + bytes(6) + b"\x01" + bytes(18) + b"\x02"),
})

# udx_packet: [kind] then a raw datagram (kind even: u16 len) or header fields + body.
def udx_struct(kind, flags, off, seq, ack, body, extra=b""):
    return bytes([kind, flags, off]) + extra + (0).to_bytes(4, "little") + seq + ack + len(body).to_bytes(2, "little") + body
w("udx_packet", {
    "data": udx_struct(1, 0x01, 0, (0).to_bytes(2, "little"), bytes([0]), b"hello"),
    "sack": udx_struct(1, 0x04, 0, (3).to_bytes(2, "little"), bytes([1]), (2).to_bytes(4, "little") + (4).to_bytes(4, "little")),
    "end_destroy": udx_struct(0x11, 0x02, 0, (0).to_bytes(2, "little"), bytes([0]), b"") + udx_struct(1, 0x10, 0, (1).to_bytes(2, "little"), bytes([0]), b""),
    "raw": bytes([0]) + (24).to_bytes(2, "little") + bytes([0xff, 1, 1, 0, 5, 0, 0, 0]) + bytes(16),
})

# dht_message: [head][len u16][datagram]*; requests as dht-rpc encodes them.
def uint(v):
    if v < 0xfd: return bytes([v])
    if v <= 0xffff: return b"\xfd" + v.to_bytes(2, "little")
    return b"\xfe" + v.to_bytes(4, "little")
def req(tid, command, target=None, value=None, internal=False, token=None):
    flags = (2 if token else 0) | (4 if internal else 0) | (8 if target else 0) | (16 if value is not None else 0)
    b = b"\x03" + uint(flags) + tid.to_bytes(2, "little") + bytes([10, 0, 0, 1]) + (5000).to_bytes(2, "little")
    if token: b += token
    b += uint(command)
    if target: b += target
    if value is not None: b += uint(len(value)) + value
    return b
def resp(tid, closer, value=None):
    flags = (4 if closer else 0) | (16 if value is not None else 0)
    b = b"\x13" + uint(flags) + tid.to_bytes(2, "little") + bytes([10, 0, 0, 1]) + (5000).to_bytes(2, "little")
    if closer: b += uint(len(closer)) + b"".join(closer)
    if value is not None: b += uint(len(value)) + value
    return b
def dg(head, b): return bytes([head]) + len(b).to_bytes(2, "little") + b
t = bytes([9]) * 32
w("dht_message", {
    "ping": dg(0x10, req(1, 0, internal=True)),
    "find_node": dg(0x20, req(2, 2, target=t, internal=True)),
    "lookup": dg(0x30, req(3, 3, target=t)),
    "announce_no_token": dg(0x40, req(4, 4, target=t, value=bytes(40))),
    "handshake": dg(0x50, req(5, 0, target=t, value=b"\x00\x00\x20" + bytes(32))),
    "immutable_get": dg(0x60, req(6, 9, target=t)),
    "mutable_get": dg(0x70, req(7, 7, target=t, value=uint(0))),
    "unsolicited_response": dg(0x81, resp(9, [bytes([10, 0, 1, 2, 0x70, 0x17])], b"\x01")),
    "timeouts": dg(0x12, req(8, 3, target=t)) + dg(0xfe, req(9, 2, target=t, internal=True)),
})

# hyperdht_messages: [type] then the value.
ip = bytes([10, 0, 0, 2, 0x70, 0x17])
w("hyperdht_messages", {
    "peer_record": bytes([0]) + bytes(32) + uint(1) + ip,
    "announce": bytes([1]) + uint(1 | 4) + bytes(32) + uint(0) + bytes(64),
    "lookup_reply": bytes([2]) + uint(1) + bytes(32) + uint(1) + ip + uint(7),
    "handshake": bytes([3]) + uint(1) + uint(0) + uint(3) + b"abc" + ip,
    "holepunch": bytes([4]) + uint(1) + uint(2) + uint(1) + uint(2) + b"xy" + ip,
    "noise_payload": bytes([5]) + uint(1) + uint(2 | 8 | 16) + uint(0) + uint(1) + uint(1) + ip + uint(1) + uint(1) + uint(5) + uint(0) + uint(1),
    "holepunch_payload": bytes([6]) + uint(1 | 4 | 16) + uint(0) + uint(1) + uint(2) + uint(1) + ip + bytes(32),
    "pair": bytes([7]) + uint(1) + bytes(32) + uint(5) + uint(0),
    "unpair": bytes([8]) + uint(0) + bytes(32),
})

# noise_ik: [case] ...; case 1 builds a real msg1 from the payload.
w("noise_ik", {
    "raw_msg1": bytes([0]) + bytes(96),
    "real_msg1": bytes([1, 3]) + b"abc" + bytes([0, 2]),
    "real_msg1_payload": bytes([1, 12]) + uint(1) + uint(8) + uint(0) + uint(1) + uint(1) + uint(1) + uint(5) + uint(0) + bytes([0, 2]),
    "edited_msg1": bytes([1, 0, 1, 5, 0, 1, 2]),
    "refused": bytes([5, 0, 0, 2]),
    "truncated": bytes([1, 0, 0, 0, 40, 0]),
    "raw_msg2": bytes([2]) + bytes(80),
})

# secret_stream: [flags] [n msgs] ([len] msg)* [edits] (pos u16, xor)* [chunk-1] junk
w("secret_stream", {
    "header_only": bytes([1, 0, 0, 255]),
    "messages": bytes([1, 3, 5]) + b"hello" + bytes([0, 3]) + b"abc" + bytes([0, 6]),
    "tampered": bytes([1, 1, 4]) + b"data" + bytes([1, 60, 0, 1, 0]),
    "junk": bytes([1, 1, 1]) + b"x" + bytes([0, 10]) + b"\x05\x00\x00hello",
    "huge_length": bytes([0, 0, 0]) + b"\xff\xff\xff" + bytes(8),
})

# offer_accept: [kind] then JSON or text.
offer = {"v": 1, "transfer_id": "00112233445566778899aabbccddeeff", "filename": "a.txt", "size": 5,
         "sha256": "ab" * 32, "sender_id": "agent-a", "recipient_id": "agent-b", "sender_key": "cd" * 32}
accept = {"p2p": "accept", "v": 1, "transfer_id": "00112233445566778899aabbccddeeff", "receiver_key": "ef" * 32}
task = {"id": 1, "title": "t", "status": "pending", "type": "file_offer", "channel": "p2p-transfer",
        "priority": 0, "payload": offer, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
message = {"id": 3, "task_id": 1, "parts": [{"type": "text", "content": json.dumps(accept)}], "created_at": "2026-01-01T00:00:00Z"}
js = lambda v: json.dumps(v, separators=(",", ":")).encode()
w("offer_accept", {
    "offer": bytes([0]) + js(offer),
    "offer_dotdot": bytes([0]) + js(dict(offer, filename="..")),
    "task": bytes([1]) + js(task),
    "accept": bytes([2]) + js(accept),
    "message": bytes([3]) + js(message),
    "transfer_id": bytes([4]) + b"00112233445566778899aabbccddeeff",
})

# hub_body: [op][who] then the body (ops: 0 create, 1 update, 2 claim, 3-7 transitions,
# 8 message, 9 org, 10 update org, 11 project, 12 update project; who: task, actor, scope).
w("hub_body", {
    "create": bytes([0, 0]) + js({"title": "x", "type": "file_offer", "channel": "c", "priority": 3, "payload": offer}),
    "update": bytes([1, 4]) + js({"title": "y", "description": "d", "priority": -5}),
    "claim": bytes([2, 4]) + js({"lease_duration": 30000}),
    "complete": bytes([3, 5]) + js({"outputs": {"ok": True}}),
    "fail": bytes([4, 5]) + js({"reason": "disk full"}),
    "reject": bytes([5, 8]) + js({"reason": "no"}),
    "cancel": bytes([6, 0x81]) + b"{}",
    "reopen": bytes([7, 2]) + b"",
    "message": bytes([8, 4]) + js({"parts": [{"type": "text", "content": js(accept).decode()}]}),
    "org": bytes([9, 0]) + js({"slug": "acme", "name": "Acme"}),
    "update_org": bytes([10, 0]) + js({"name": "Default org"}),
    "project": bytes([11, 0]) + js({"slug": "p2", "name": "P2"}),
    "update_project": bytes([12, 0]) + js({"name": "Main project"}),
    "not_json": bytes([0, 0]) + b"title=x",
})
