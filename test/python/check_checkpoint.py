"""Opens a kradagrad checkpoint (format 2) with the `safetensors` package, as a Python user
would, and compares every tensor with what the Node side wrote down (expected.json: name ->
{dtype, shape, values}). Prints one line per tensor; exits 1 on any difference.

Usage: python3 check_checkpoint.py <checkpoint> <expected.json>
"""
import json
import sys

import numpy as np
from safetensors import safe_open


def main(path: str, expected_path: str) -> int:
    expected = json.load(open(expected_path))
    bad = 0
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
        if meta.get("format") != "kradagrad-checkpoint" or meta.get("version") != "2":
            print(f"metadata: {meta.get('format')} version {meta.get('version')}")
            return 1
        names = sorted(f.keys())
        if names != sorted(expected):
            print(f"names differ: {names} vs {sorted(expected)}")
            return 1
        for name in names:
            t = f.get_tensor(name)
            e = expected[name]
            want = np.array(e["values"], dtype=np.float32 if e["dtype"] == "float32" else np.float64).reshape(e["shape"])
            ok = t.dtype == want.dtype and t.shape == want.shape and np.array_equal(t, want)
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name} {t.dtype} {list(t.shape)}")
    print(f"{len(names)} tensors, {bad} differ; kind {meta['kind']}, step {meta['step']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
