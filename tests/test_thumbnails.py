"""Stage-preview thumbnails (numpy + PIL): the report palette, the size limit, the physical aspect."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imaging_pipelines.report.figures import LABEL_COLOURS
from imaging_pipelines.report.thumbnails import LABEL_HEX, class_thumbnail, raster_thumbnail, volume_thumbnail


def test_thumbnails_use_the_report_palette():
    assert LABEL_HEX == LABEL_COLOURS


def test_volume_thumbnail_is_small_and_keeps_the_physical_aspect():
    volume = np.random.default_rng(0).normal(100, 10, (20, 40, 50)).astype(np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    labels[5:15, 10:30, 10:40] = 1
    png = volume_thumbnail(volume, (1.0, 1.0, 3.0), labels, height=60)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    # axial 60 * 50/40 = 75 px, coronal 60 * 50/60 = 50 px, sagittal 60 * 40/60 = 40 px, two 4 px gaps
    assert image.size == (75 + 50 + 40 + 8, 60)
    assert (np.asarray(image) == [230, 25, 75]).all(axis=-1).any()  # the label outline in label colour 1
    assert Image.open(io.BytesIO(volume_thumbnail(volume, (1.0, 1.0, 1.0), height=400))).width <= 256


def test_raster_and_class_thumbnails():
    bands = np.random.default_rng(1).random((4, 32, 32)).astype(np.float32)
    bands[:, :4] = np.nan
    image = np.asarray(Image.open(io.BytesIO(raster_thumbnail(bands, ["blue", "green", "red", "nir"]))).convert("RGB"))
    assert image.shape == (32, 32, 3) and (image[:4] == 0).all()
    classes = np.zeros((16, 16), np.uint8)
    classes[4:8, 4:8] = 2
    assert Image.open(io.BytesIO(class_thumbnail(classes))).size == (16, 16)
