"""The ``classification:`` block of a catalog entry (pydantic; no torch import): an image-level classifier
(2D radiographs per patient, or remote-sensing tiles), trained as a model asset and applied per partition.

Off by default (``enabled: false``): a dataset without the block gets no classification assets.

Labels:

- ``table`` (medical): a CSV file (``file``, relative to the catalog file) with one row per patient,
  ``id_column`` the patient identifier as in the DICOM PatientID (or the subject name of non-DICOM files),
  ``label_column`` a class name of ``classes`` (or its value). Identifiers are only used to match rows to
  partitions through the pseudonym; they are never stored or logged.
- ``tile_reference`` (remote sensing): a tile's class is the reference-raster class value covering at least
  ``min_fraction`` of the tile core's labelled pixels (tiles with no such class are not labelled).

Sizes: ``input_size`` is the side, in pixels, of the square network input every image is resized to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ARCHITECTURES = ("resnet", "densenet121")


class ClassificationLabels(BaseModel):
    """Where the image-level reference classes come from (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["table", "tile_reference"] = "table"
    file: str | None = Field(None, description="CSV of patient labels (source: table), relative to the catalog file")
    id_column: str = "patient_id"
    label_column: str = "label"
    min_fraction: float = Field(0.5, gt=0, le=1, description="tile_reference: share of the core a class must cover")

    def resolved(self, catalog_file: str | Path) -> ClassificationLabels:
        """A copy whose relative ``file`` is made absolute against the catalog file's folder."""
        if not self.file or "://" in self.file or Path(self.file).is_absolute():
            return self
        return self.model_copy(update={"file": str((Path(catalog_file).parent / self.file).resolve())})


class ClassifierTraining(BaseModel):
    """Training of the classifier (class-weighted cross-entropy, Adam, best validation epoch kept)."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["resnet", "densenet121"] = Field(
        "resnet", description="resnet: a small MONAI ResNet (basic blocks); densenet121: MONAI DenseNet121")
    input_size: int = Field(64, ge=16, le=1024, description="square network input side, pixels")
    base_filters: int = Field(16, ge=4, description="resnet: channels of the first stage (doubling per stage)")
    normalise: Literal["per_image", "dataset"] = Field(
        "per_image", description="per_image: z-score each image (radiographs); dataset: per-channel statistics "
        "of the training images (reflectance)")
    augmentation: Literal["none", "flip", "dihedral"] = "flip"
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    class_weights: Literal["inverse_frequency", "none"] = "inverse_frequency"
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of labelled partitions never trained on")
    validation_fraction: float = Field(0.15, ge=0, lt=1, description="share used to pick the best epoch")
    seed: int = 0
    min_validation_accuracy: float = Field(0.7, ge=0, le=1, description="asset check threshold")


class ClassificationConfig(BaseModel):
    """An image-level classifier of the dataset's partitions (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    classes: dict[str, int] = Field(default_factory=dict, description="class name -> value (the table's labels, "
                                    "or the reference raster's class values; 0 may name the background)")
    labels: ClassificationLabels = Field(default_factory=ClassificationLabels)
    inputs: list[str] | None = Field(None, description="remote sensing: composite bands fed to the network (all by default)")
    training: ClassifierTraining = Field(default_factory=ClassifierTraining)
    saliency: bool = Field(True, description="Grad-CAM saliency overlay of each image in its inference asset")

    @model_validator(mode="after")
    def _usable(self) -> ClassificationConfig:
        if not self.enabled:
            return self
        if len(self.classes) < 2:
            raise ValueError("classification needs at least two classes")
        if len(set(self.classes.values())) != len(self.classes):
            raise ValueError("classification class values must be distinct")
        if any(not 0 <= v <= 255 for v in self.classes.values()):
            raise ValueError("classification class values must be in 0..255")
        if self.labels.source == "table" and not self.labels.file:
            raise ValueError("classification labels source 'table' needs 'file' (a CSV of patient labels)")
        if self.training.test_fraction + self.training.validation_fraction >= 1:
            raise ValueError("test_fraction + validation_fraction must leave training partitions")
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names in network index order (ascending value)."""
        return [name for name, _ in sorted(self.classes.items(), key=lambda kv: kv[1])]
