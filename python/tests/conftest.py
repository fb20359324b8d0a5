"""Reads the repository's committed fixtures (tests/fixtures/*.safetensors) with numpy alone."""

import json
import pathlib
import struct

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8,
          "I16": np.int16, "U32": np.uint32, "I8": np.int8, "U16": np.uint16}


def load(name):
    raw = (FIXTURES / name).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    out = {}
    for key, t in header.items():
        if key == "__metadata__":
            out[key] = t
            continue
        a, b = t["data_offsets"]
        out[key] = np.frombuffer(body[a:b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]).copy()
    return out


@pytest.fixture
def fixture():
    return load
