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


def read_json(path, what: str = "JSON file"):
    """The parsed JSON of ``path``; a truncated, binary or otherwise unparsable file is a
    one-line :class:`~models.errors.InputError` naming it (and the line of the fault)."""
    from models.errors import InputError

    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(path, f"not a {what} (binary data)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not a valid {what} ({exc.msg} at column {exc.colno}); "
                               "is it truncated?", line=exc.lineno) from None
