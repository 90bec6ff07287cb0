"""Byte-reproducible ``.npz`` files: fixed zip timestamps, so equal arrays give equal bytes and
DVC sees an unchanged output as unchanged."""
from __future__ import annotations

import zipfile

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path, arrays: dict, level: int = 6) -> None:
    """Write ``arrays`` as an ``.npz`` (readable by ``numpy.load``) with fixed entry timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
