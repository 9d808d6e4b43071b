"""The seed corpus: small valid files per reader, real ones where the shared data folder exists.

A corpus folder holds ``<kind>/<seed name>/<files>`` with kind ``dicom`` (a seed is a short series: one to
three files), ``nifti`` (one ``.nii`` / ``.nii.gz``), ``geotiff`` (one ``.tif``) or ``nrrd_mha`` (a ``.nrrd`` /
``.mha``, or a detached ``.nhdr`` / ``.mhd`` header with its ``.raw`` data; the header sorts first). Generated seeds come from
the project's DICOM writer, nibabel and rasterio, so a corpus can be built without the shared data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KINDS = ("dicom", "nifti", "geotiff")  # the readers fuzzed by default
EXTRA_KINDS = ("nrrd_mha",)  # NRRD and MetaImage through SimpleITK (read_image_file), on request
SHARED_DATA_ENV = "IMAGING_SHARED_DATA"

# Real seed files below the shared data root (README.md there describes them), by reader.
SHARED_SEEDS = {
    "dicom": {
        "ge_epi": ("medical/dcm_qa_nih/In/20180918GE/mr_0004", 3),  # (folder, number of files to take)
        "siemens_mosaic": ("medical/dcm_qa_nih/In/20180918Si/mr_0003", 1),
        "ct_jpeg2000": ("medical/ct_totalseg/example_ct_dicom", 2),
    },
    "nifti": {
        "seg_mr": "medical/ct_totalseg/example_seg_mr.nii.gz",
        "mr_sm": "medical/ct_totalseg/example_mr_sm.nii.gz",
        "dcm2niix_ref": "medical/dcm_qa_nih/Ref/DCM2NIIX_regression_test_4.nii",
    },
    "nrrd_mha": {
        "brain_label": "medical/brain_tumour_mr/brain1_label.nrrd",
    },
    "geotiff": {
        "float_nan": "remote_sensing/landsat_rgb/float_nan.tif",
        "rotated": "remote_sensing/landsat_rgb/rotated.tif",
        "all_nodata": "remote_sensing/landsat_rgb/all-nodata.tif",
        "corrupt": "remote_sensing/landsat_rgb/corrupt.tif",
        "rgb_byte": "remote_sensing/landsat_rgb/RGB.byte.tif",
        "fp_mask": "remote_sensing/spacenet_atlanta/sample_fp_mask_from_geojson.tif",
    },
}


@dataclass(frozen=True)
class Seed:
    """A valid input of one reader: ``files`` are (file name, bytes); DICOM seeds may hold a short series."""

    kind: str
    name: str
    files: tuple[tuple[str, bytes], ...]


def default_shared_root() -> Path | None:
    """``$IMAGING_SHARED_DATA`` or ``../shared/data`` beside the project, if it exists."""
    root = Path(os.environ.get(SHARED_DATA_ENV) or Path(__file__).resolve().parents[3] / "shared" / "data")
    return root if root.is_dir() else None


# ------------------------------------------------------------------------------------------------ generated
def _dicom_generated(folder: Path) -> dict[str, list[Path]]:
    import pydicom
    from pydicom.dataelem import DataElement
    from pydicom.uid import RLELossless

    from imaging_pipelines.tools.demo.dicom_writer import PatientIdentity, write_dicom_series
    from imaging_pipelines.core.volume import Volume

    who = PatientIdentity("FUZZ^SEED", "FUZZ0001", "19700101", "O", "ACC0", "NOWHERE", "NOBODY", "20240101")
    rng = np.random.default_rng(0)
    out: dict[str, list[Path]] = {}
    mr = Volume(rng.integers(0, 900, (3, 12, 10)).astype(np.float32), spacing=(1.0, 1.2, 3.0))
    out["gen_mr"] = write_dicom_series(mr, folder / "gen_mr", patient=who, series_number=1, series_description="mr")
    ct = Volume(rng.integers(-1000, 1500, (2, 8, 8)).astype(np.float32), spacing=(0.8, 0.8, 2.0))
    out["gen_ct_rescaled"] = write_dicom_series(ct, folder / "gen_ct", patient=who, series_number=2, modality="CT",
                                                series_description="ct", rescale_slope=2.0, rescale_intercept=-1024)
    mosaic = Volume(rng.integers(0, 500, (1, 12, 12)).astype(np.float32))
    out["gen_mosaic"] = write_dicom_series(
        mosaic, folder / "gen_mosaic", patient=who, series_number=3, series_description="mosaic",
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "M", "MOSAIC"], "SpacingBetweenSlices": 2.0,
                    (0x0019, 0x0010): DataElement(0x00190010, "LO", "SIEMENS MR HEADER"),
                    (0x0019, 0x100A): DataElement(0x0019100A, "US", 4)})
    # RLE-compressed copy of the MR series (an encapsulated transfer syntax)
    rle = folder / "gen_rle"
    rle.mkdir()
    out["gen_rle"] = []
    for path in out["gen_mr"][:2]:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless, encoding_plugin="pydicom")
        ds.save_as(rle / path.name, enforce_file_format=True)
        out["gen_rle"].append(rle / path.name)
    # legacy multi-frame: the three MR slices as frames of one file
    ds = pydicom.dcmread(out["gen_mr"][0])
    frames = [pydicom.dcmread(p).PixelData for p in out["gen_mr"]]
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(frames)
    (folder / "gen_multiframe").mkdir()
    ds.save_as(folder / "gen_multiframe" / "mf.dcm", enforce_file_format=True)
    out["gen_multiframe"] = [folder / "gen_multiframe" / "mf.dcm"]
    return out


def _nifti_generated(folder: Path) -> dict[str, list[Path]]:
    import nibabel as nib

    rng = np.random.default_rng(1)
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-10, 20, 5)
    out = {}
    images = {
        "gen_int16.nii.gz": nib.Nifti1Image(rng.integers(-100, 900, (10, 9, 4)).astype(np.int16), affine),
        "gen_4d_scaled.nii": nib.Nifti1Image(rng.random((6, 5, 3, 3)).astype(np.float32), affine),
        "gen_uint8.nii": nib.Nifti1Image(rng.integers(0, 255, (8, 7, 5)).astype(np.uint8), affine),
        "gen_nifti2.nii": nib.Nifti2Image(rng.random((5, 6, 4)).astype(np.float64), affine),
    }
    images["gen_4d_scaled.nii"].header.set_slope_inter(2.0, -1.0)
    for name, img in images.items():
        path = folder / name
        nib.save(img, path)
        out[name.split(".")[0]] = [path]
    return out


def _geotiff_generated(folder: Path) -> dict[str, list[Path]]:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(2)
    transform = from_origin(500000.0, 4200000.0, 30.0, 30.0)
    specs = {
        "gen_rgb_plain": ("uint8", 3, {}, None),
        "gen_int16_deflate_tiled": ("int16", 1, {"compress": "deflate", "tiled": True, "blockxsize": 16,
                                                 "blockysize": 16}, -9999),
        "gen_float_lzw_pred": ("float32", 2, {"compress": "lzw", "predictor": 3}, None),
        "gen_uint16_bigtiff_packbits": ("uint16", 2, {"compress": "packbits", "BIGTIFF": "YES",
                                                      "interleave": "band"}, 0),
        "gen_uint8_jpeg": ("uint8", 1, {"compress": "jpeg", "tiled": True, "blockxsize": 16, "blockysize": 16},
                           None),
    }
    out = {}
    for name, (dtype, count, options, nodata) in specs.items():
        data = (rng.random((count, 24, 20)) * 200).astype(dtype)
        if dtype == "float32":
            data[0, 0, :3] = np.nan
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=20, height=24, count=count, dtype=dtype,
                           crs="EPSG:32618", transform=transform, nodata=nodata, **options) as dst:
            dst.write(data)
        out[name] = [path]
    return out


def _nrrd_mha_generated(folder: Path) -> dict[str, list[Path]]:
    import SimpleITK as sitk

    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray(rng.integers(0, 900, (4, 6, 10)).astype(np.int16))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((-5.0, 10.0, 2.0))
    vector = sitk.GetImageFromArray(rng.random((3, 5, 4, 2)).astype(np.float32), isVector=True)
    out = {}
    for name, img, compress in (("gen_gzip.nrrd", image, True), ("gen_raw.nrrd", image, False),
                                ("gen_raw.mha", image, False), ("gen_zlib.mha", image, True),
                                ("gen_vector.mha", vector, False), ("gen_detached.nhdr", image, False),
                                ("gen_detached.mhd", image, False)):
        work = folder / name.replace(".", "_") / name
        work.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(work), useCompression=compress)
        out[work.stem + "_" + work.suffix[1:]] = sorted(work.parent.iterdir())
    return out


GENERATORS = {"dicom": _dicom_generated, "nifti": _nifti_generated, "geotiff": _geotiff_generated,
              "nrrd_mha": _nrrd_mha_generated}


# ------------------------------------------------------------------------------------------------ corpus
def _shared_paths(kind: str, root: Path) -> dict[str, list[Path]]:
    out = {}
    for name, spec in SHARED_SEEDS[kind].items():
        if kind == "dicom":
            rel, n = spec
            folder = root / rel
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".txt"))[:n] \
                if folder.is_dir() else []
        else:
            files = [root / spec] if (root / spec).is_file() else []
        if files:
            out[f"shared_{name}"] = files
    return out


def build_corpus(out_dir: str | os.PathLike, shared_root: str | os.PathLike | None = None,
                 kinds: tuple[str, ...] = KINDS, generated: bool = True) -> dict[str, list[str]]:
    """Write the seed corpus into ``out_dir``: generated seeds, plus real ones from ``shared_root`` if given.

    Returns {kind: [seed names]}.
    """
    out_dir = Path(out_dir)
    names: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as tmp:
        for kind in kinds:
            found: dict[str, list[Path]] = {}
            if generated:
                work = Path(tmp) / kind
                work.mkdir()
                found.update(GENERATORS[kind](work))
            if shared_root is not None:
                found.update(_shared_paths(kind, Path(shared_root)))
            for name, files in found.items():
                target = out_dir / kind / name
                target.mkdir(parents=True, exist_ok=True)
                for f in files:
                    shutil.copyfile(f, target / f.name)
            names[kind] = sorted(found)
    return names


def load_corpus(corpus_dir: str | os.PathLike, kinds: tuple[str, ...] = KINDS) -> dict[str, list[Seed]]:
    """The seeds of a corpus folder written by :func:`build_corpus`, by kind, in a stable order."""
    corpus: dict[str, list[Seed]] = {}
    for kind in kinds:
        folder = Path(corpus_dir) / kind
        seeds = []
        for seed_dir in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
            files = tuple((f.name, f.read_bytes()) for f in sorted(seed_dir.iterdir()) if f.is_file())
            if files:
                seeds.append(Seed(kind, seed_dir.name, files))
        corpus[kind] = seeds
    return corpus
