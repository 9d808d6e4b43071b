"""Siemens mosaic images: several slices tiled into one 2D frame.

The tiles are read row by row; tile ``n`` is slice ``n`` and lies at
``ipp_fixed + n * spacing * normal`` where ``normal`` is the CSA ``SliceNormalVector`` (its sign sets the
slice order) and ``ipp_fixed`` corrects ImagePositionPatient, which refers to the whole mosaic, to the first
tile (the formula of nibabel.nicom.dicomwrappers.MosaicWrapper). All vectors are LPS, lengths in mm.
"""

from __future__ import annotations

import numpy as np

from .siemens_csa import csa_image_header, csa_scalar, csa_vector


def siemens_csa_image(ds) -> dict | None:
    """The Siemens CSA image header (0029,xx10) as nibabel's csareader parses it, or None."""
    return csa_image_header(ds)


def mosaic_info(ds) -> tuple[int, np.ndarray | None] | None:
    """(number of tiles, CSA slice normal or None) for a Siemens mosaic, else None."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" not in image_type:
        return None
    n = None
    normal = None
    csa = siemens_csa_image(ds)
    if csa:
        n = csa_scalar(csa, "NumberOfImagesInMosaic")
        try:
            vec = csa_vector(csa, "SliceNormalVector", 3)
            if vec is not None and np.linalg.norm(vec) > 1e-6:
                normal = np.asarray(vec, dtype=float) / np.linalg.norm(vec)
        except Exception:
            normal = None
    if not n:
        private = ds.get((0x0019, 0x100A))  # SIEMENS MR HEADER NumberOfImagesInMosaic
        if private is not None:
            try:
                value = private.value
                n = int.from_bytes(value[:2], "little") if isinstance(value, bytes) else int(value)
            except Exception:
                n = None
    if not n or n < 1:
        return None
    return int(n), normal


def mosaic_first_tile_position(ipp: np.ndarray, row_cos: np.ndarray, col_cos: np.ndarray,
                               pixel_spacing: tuple[float, float], mosaic_rows: int, mosaic_cols: int,
                               tile_rows: int, tile_cols: int) -> np.ndarray:
    """ImagePositionPatient of the first tile (the mosaic's IPP refers to the full mosaic frame)."""
    shift_rows = (mosaic_rows - tile_rows) / 2.0  # in row index units (moves along the column cosine)
    shift_cols = (mosaic_cols - tile_cols) / 2.0
    return ipp + col_cos * pixel_spacing[0] * shift_rows + row_cos * pixel_spacing[1] * shift_cols


def tile_shape(mosaic_rows: int, mosaic_cols: int, n_tiles: int) -> tuple[int, int]:
    per_side = int(np.ceil(np.sqrt(n_tiles)))
    return mosaic_rows // per_side, mosaic_cols // per_side


UIH_IMAGES_IN_GRID = 0x00651050
UIH_VFRAME_SEQUENCE = 0x00651051


def uih_grid(ds) -> tuple[int, int, list[np.ndarray]] | None:
    """UIH grid ("VFRAME") image: (number of tiles, tile columns, ImagePositionPatient of each tile, LPS mm) or None.

    UIH stores n slices as ceil(sqrt(n)) columns and ceil(n / columns) rows of tiles (dcm2niix ``nii_demosaic``);
    each tile's position is in the private VFRAME sequence (0065,1051), item t for tile t.
    """
    if "UIH" not in str(ds.get("Manufacturer", "") or "").upper() and UIH_VFRAME_SEQUENCE not in ds:
        return None
    n_elem = ds.get(UIH_IMAGES_IN_GRID)
    seq = ds.get(UIH_VFRAME_SEQUENCE)
    if n_elem is None or seq is None:
        return None
    try:
        value = n_elem.value
        n = int(float(value.decode() if isinstance(value, bytes) else value))
        items = list(seq.value)
    except (TypeError, ValueError, AttributeError):
        return None
    if n < 2 or len(items) < n:
        return None
    positions = []
    for item in items[:n]:
        ipp = item.get("ImagePositionPatient")
        if ipp is None or len(ipp) < 3:
            return None
        positions.append(np.asarray([float(x) for x in ipp[:3]], dtype=float))
    return n, int(np.ceil(np.sqrt(n))), positions
