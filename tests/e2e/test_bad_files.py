#!/usr/bin/env python3
"""Hostile and broken model files through the command line (issue 8): for each
hand-built bad file, `strata inspect FILE` and `strata generate -m FILE` must
exit with status 1 (an exit, not a signal: no crash, no abort, no sanitizer
report), print exactly one error line naming the file and the problem, and
print nothing on stdout (no partial output).

Run by ctest: test_bad_files.py BINARY SHARED_DIR. Prints 'N passed, N failed'."""
import json, os, struct, tempfile

import harness
from harness import check, run

# --- GGUF builder -----------------------------------------------------------
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def info(name, ne, ttype, offset):
    return gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne) + struct.pack("<IQ", ttype, offset)


def gguf(kvs, infos, data=b"", n_kv=None, n_tensors=None, version=3, magic=b"GGUF", align=32):
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    return head + b"\0" * ((-len(head)) % align) + data


ARCH = kv("general.architecture", STR, gstr("smollm3"))
T = info("token_embd.weight", [32, 4], 0, 0)  # F32, 512 bytes
DATA = b"\0" * 512

GGUF_CASES = [
    ("bad magic", gguf([ARCH], [T], DATA, magic=b"GGUX"), "bad magic"),
    ("version 1", gguf([ARCH], [T], DATA, version=1), "version 1"),
    ("version 99", gguf([ARCH], [T], DATA, version=99), "unsupported GGUF version 99"),
    ("n_kv wraps", gguf([ARCH], [T], DATA, n_kv=1 << 63), "metadata count"),
    ("n_tensors wraps", gguf([ARCH], [T], DATA, n_tensors=(1 << 64) - 1), "tensor count"),
    ("string length + 1 wraps", gguf([ARCH, gstr("k") + struct.pack("<IQ", STR, (1 << 64) - 1)], [T], DATA), "past the end"),
    ("key length wraps", gguf([ARCH, struct.pack("<Q", (1 << 64) - 1)], [T], DATA), "past the end"),
    ("array count x size wraps", gguf([ARCH, kv("a", ARR, struct.pack("<IQ", U32, 1 << 62))], [T], DATA), "does not fit"),
    ("array of strings count", gguf([ARCH, kv("a", ARR, struct.pack("<IQ", STR, (1 << 64) - 1))], [T], DATA), "does not fit"),
    ("nested arrays too deep", gguf([ARCH, kv("a", ARR, struct.pack("<IQ", ARR, 1) * 9 + struct.pack("<IQ", U8, 0))], [T], DATA), "nested deeper"),
    ("unknown value type", gguf([ARCH, kv("a", 13, b"")], [T], DATA), "unknown value type 13"),
    ("unknown array type", gguf([ARCH, kv("a", ARR, struct.pack("<IQ", 77, 1))], [T], DATA), "unknown value type 77"),
    ("bool not 0/1", gguf([ARCH, kv("a", BOOL, b"\x07")], [T], DATA), "neither 0 nor 1"),
    ("empty key", gguf([ARCH, kv("", U32, b"\0\0\0\0")], [T], DATA), "empty"),
    ("duplicate key", gguf([ARCH, ARCH], [T], DATA), "duplicate metadata key"),
    ("alignment 0", gguf([ARCH, kv("general.alignment", U32, struct.pack("<I", 0))], [T], DATA), "not a power of two"),
    ("alignment 48", gguf([ARCH, kv("general.alignment", U32, struct.pack("<I", 48))], [T], DATA, align=48), "not a power of two"),
    ("alignment as a string", gguf([ARCH, kv("general.alignment", STR, gstr("32"))], [T], DATA), "general.alignment has type string"),
    ("n_dims 5", gguf([ARCH], [info("t", [1, 1, 1, 1, 32], 0, 0)], DATA), "5 dimensions"),
    ("n_dims 0", gguf([ARCH], [info("t", [], 0, 0)], DATA), "0 dimensions"),
    ("elements overflow", gguf([ARCH], [info("t", [1 << 32, 1 << 32], 0, 0)], DATA), "overflows 64 bits"),
    ("bytes overflow", gguf([ARCH], [info("t", [1 << 40, 1 << 22], 0, 0)], DATA), "overflows 64 bits"),
    ("zero dimension", gguf([ARCH], [info("t", [32, 0], 0, 0)], DATA), "dimension 1 is 0"),
    ("unknown tensor type", gguf([ARCH], [info("t", [32], 99, 0)], DATA), "unknown tensor type id 99"),
    ("removed tensor type 4", gguf([ARCH], [info("t", [32], 4, 0)], DATA), "unknown tensor type id 4"),
    ("row not a block multiple", gguf([ARCH], [info("t", [48], 12, 0)], DATA), "not a multiple of the Q4_K block"),
    ("empty tensor name", gguf([ARCH], [info("", [32], 0, 0)], DATA), "empty name"),
    ("duplicate tensor name", gguf([ARCH], [T, info("token_embd.weight", [32], 0, 512)], DATA + b"\0" * 128), "duplicate tensor name"),
    ("unaligned offset", gguf([ARCH], [info("t", [8], 0, 4)], DATA), "not aligned"),
    ("overlapping tensors", gguf([ARCH], [info("a", [64], 0, 0), info("b", [64], 0, 128)], DATA), "overlap"),
    ("offset past the end", gguf([ARCH], [info("t", [32], 0, 1 << 40)], DATA), "past the end"),
    ("offset + size wraps", gguf([ARCH], [info("t", [32], 0, (1 << 64) - 64)], DATA), "past the end"),
    ("truncated in the tensor table", gguf([ARCH], [T], DATA)[:24 + len(ARCH) + 30], "truncated in its shape"),
    ("empty file", b"", "too short"),
    ("missing hyper-parameters", gguf([ARCH], [T], DATA), "no metadata 'smollm3.block_count'"),
    ("unknown architecture", gguf([kv("general.architecture", STR, gstr("mamba"))], [T], DATA), "'mamba' is not supported"),
]

# --- HF directories ----------------------------------------------------------
CONFIG = {"model_type": "smollm3", "num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 260,
          "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True}


def safetensors(header, data, length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


W = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
ST_CASES = [
    ("header length past the file", safetensors({"w": W}, b"\0" * 16, length=1 << 20), "runs past the end"),
    ("header length over 100 MB", safetensors({"w": W}, b"\0" * 16, length=(1 << 64) - 1), "exceeds the limit"),
    ("header not UTF-8", safetensors(b'{"w\xff": 1}', b""), "not valid UTF-8"),
    ("header not JSON", safetensors(b'{"w": ', b""), "not valid JSON"),
    ("header nested deep", safetensors(b'{"w": ' + b"[" * 50 + b"]" * 50 + b"}", b""), "deeper"),
    ("unknown dtype", safetensors({"w": dict(W, dtype="F128")}, b"\0" * 16), "unknown dtype"),
    ("size mismatch", safetensors({"w": dict(W, shape=[2, 3])}, b"\0" * 16), "needs 24"),
    ("shape overflow", safetensors({"w": dict(W, shape=[1 << 62, 8])}, b"\0" * 16), "overflows 64 bits"),
    ("negative dimension", safetensors({"w": dict(W, shape=[-2, -2])}, b"\0" * 16), "not a non-negative integer"),
    ("gap", safetensors({"w": dict(W, data_offsets=[16, 32])}, b"\0" * 32), "belong to no tensor"),
    ("bytes after the last tensor", safetensors({"w": W}, b"\0" * 20), "bytes after the last tensor"),
    ("duplicate tensor", safetensors(b'{"w": ' + json.dumps(W).encode() + b', "w": ' + json.dumps(W).encode() + b"}", b"\0" * 16), "duplicate key"),
    ("overlap", safetensors({"w": W, "v": W}, b"\0" * 16), "overlaps"),
]

CONFIG_CASES = [
    ("config not an object", "[1]", "not a JSON object"),
    ("config duplicate key", json.dumps(CONFIG)[:-1] + ', "hidden_size": 64}', "duplicate key 'hidden_size'"),
    ("config rope_scaling type not a string", json.dumps(dict(CONFIG, rope_scaling={"rope_type": 5})), "is not a string"),
    ("config nested 100000 deep", json.dumps(CONFIG)[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}", "deeper"),
    ("config bos wraps", json.dumps(dict(CONFIG, bos_token_id=(1 << 32) + 1)), "bos_token_id"),
    ("config heads overflow", json.dumps(dict(CONFIG, num_attention_heads=1 << 30, num_key_value_heads=1 << 30, head_dim=2)), "head count"),
]


def check_refused(name, path, words):
    """inspect and generate of `path`: exit 1, one error line naming the path and `words`, no stdout."""
    for cmd in (["inspect", path], ["generate", "-m", path, "-p", "x", "-n", "1"]):
        p = run(cmd, timeout=120, text=False)
        err = p.stderr.decode(errors="replace").strip()
        lines = err.splitlines()
        ok = (p.returncode == 1 and p.stdout == b"" and len(lines) == 1 and path in err
              and all(w in err for w in words))
        check(f"{name} ({cmd[0]})", ok, f"exit {p.returncode}, stderr {err[-400:]!r}, stdout {p.stdout[:100]!r}")


with tempfile.TemporaryDirectory() as d:
    for i, (name, data, what) in enumerate(GGUF_CASES):
        path = os.path.join(d, f"bad{i}.gguf")
        open(path, "wb").write(data)
        check_refused("gguf: " + name, path, [what])
    for i, (name, data, what) in enumerate(ST_CASES):
        hf = os.path.join(d, f"st{i}")
        os.mkdir(hf)
        open(os.path.join(hf, "config.json"), "w").write(json.dumps(CONFIG))
        open(os.path.join(hf, "model.safetensors"), "wb").write(data)
        check_refused("safetensors: " + name, hf, [os.path.join(hf, "model.safetensors"), what])
    for i, (name, text, what) in enumerate(CONFIG_CASES):
        hf = os.path.join(d, f"cfg{i}")
        os.mkdir(hf)
        open(os.path.join(hf, "config.json"), "w").write(text)
        check_refused(name, hf, [os.path.join(hf, "config.json"), what])

harness.finish()
