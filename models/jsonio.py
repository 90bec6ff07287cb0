"""The project's JSON text: sorted keys, numpy scalars and arrays as plain numbers, a trailing newline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_text(obj, indent: int = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n"
