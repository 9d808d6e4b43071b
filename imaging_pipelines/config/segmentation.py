"""The ``segmentation:`` block of a catalog entry (pydantic; no torch import).

Label values are the values found in the reference label files (e.g. the demo phantoms' lesion is 5);
the model writes the same values back, so predictions and references compare directly. Patch sizes are
in voxels, array order (z, y, x); sizes of objects in millilitres (mL).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_METHODS = ("dynunet", "unet")
BASELINE_METHODS = ("otsu", "max_entropy", "watershed", "fast_marching")


class LabelSource(BaseModel):
    """Where reference labels come from.

    ``inbox``: label files in the dataset's own inbox, recognised by a name ending in one of ``suffixes``
    before the extension (``sub-01_T1w_label.nii.gz``, ``s01_mr_t1_label.nii.gz``); a label file belongs to
    the patient whose DICOM files lie in its folder or directly below it (else to the subject named by its
    file name) and to the image whose grid it matches exactly. It is never ingested as an image.
    ``dataset``: the ingested labels of a sibling dataset (``dataset``) with the same partition keys.
    Files with one of ``suffixes`` are treated as label files (never as images) whatever ``source`` says.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["none", "inbox", "dataset"] = "none"
    suffixes: list[str] = Field(default_factory=lambda: ["_label", "_seg"])
    dataset: str | None = Field(None, description="id of the labelled sibling dataset (source: dataset)")

    @model_validator(mode="after")
    def _dataset_named(self) -> LabelSource:
        if self.source == "dataset" and not self.dataset:
            raise ValueError("source 'dataset' needs the sibling dataset's id in 'dataset'")
        return self


class TrainingConfig(BaseModel):
    """Model training (nnU-Net-style recipe scaled to the hardware); see ``segment.unet_train``.

    ``source: synthetic`` trains the model on domain-randomised lesions on MNI152 anatomy instead of the
    dataset's labels (``medical.synth``; no labels needed): ``synthetic_config`` picks the ``small`` (minutes)
    or ``benchmark`` training; the patch / epoch settings above do not apply to it."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["labels", "synthetic"] = "labels"
    synthetic_config: Literal["small", "benchmark"] = "small"

    patch_size: list[int] = Field(default_factory=lambda: [32, 32, 32], min_length=3, max_length=3)
    epochs: int = Field(12, ge=1)
    iterations_per_epoch: int = Field(25, ge=1)
    batch_size: int = Field(2, ge=1)
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = Field(1e-2, gt=0)
    base_filters: int = Field(16, ge=2)
    foreground_oversampling: float = Field(0.5, ge=0, le=1)
    validation_fraction: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of labelled patients never trained on")
    seed: int = 0
    min_validation_dice: float = Field(0.7, ge=0, le=1, description="asset check threshold (mean foreground Dice)")


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: float = Field(0.5, ge=0, lt=1, description="sliding-window overlap (fraction of the patch)")
    flip_tta: bool = Field(False, description="average the predictions of the 8 axis-flipped inputs")
    sw_batch_size: int = Field(2, ge=1)


class PostprocessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_component_ml: float = Field(0.0, ge=0, description="drop connected components smaller than this (mL)")
    keep_largest: int = Field(0, ge=0, description="keep only the N largest components per label (0: all)")
    fill_holes: bool = True


class NnunetConfig(BaseModel):
    """nnU-Net v2 integration (install extra ``segment-export``): export the labelled cohort in nnU-Net's raw
    format and verify it (``run: export``), also run nnU-Net's fingerprint/plan/preprocess (``plan``), or
    also train ``trainer`` on ``fold`` and predict the held-out cases (``train``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    dataset_number: int = Field(500, ge=1, le=999)
    run: Literal["export", "plan", "train"] = "export"
    configuration: str = "3d_fullres"
    trainer: str = "nnUNetTrainer"
    fold: int = Field(0, ge=0, le=4)


class EvaluationConfig(BaseModel):
    """Absolute floors of the cohort checks on the held-out test split. A check judges only with at least
    ``min_evaluable_cases`` test images that have a reference; with fewer it warns (not judged) instead."""

    model_config = ConfigDict(extra="forbid")

    min_test_dice: float = Field(0.5, ge=0, le=1, description="mean test-split Dice every class must reach")
    min_evaluable_cases: int = Field(3, ge=1, description="test images with a reference needed to judge")


class SegmentationConfig(BaseModel):
    """How a medical dataset is segmented.

    ``method``: a trained model (``dynunet``: MONAI DynUNet planned like nnU-Net; ``unet``: MONAI UNet), a
    classical method (``otsu``, ``max_entropy``: threshold lesion detection with morphology; ``watershed``:
    marker-based morphological watershed; ``fast_marching``: fast marching from detected seeds) or
    ``none``. A model method falls back to ``fallback`` while no model is trained. ``baselines`` also run
    on every image and are scored beside the model. ``input``: the stage whose images are segmented.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "dynunet", "unet", "otsu", "max_entropy", "watershed", "fast_marching"] = "none"
    input: Literal["preprocessed", "ingested"] = "preprocessed"
    modalities: list[str] = Field(default_factory=lambda: ["MR"])
    image_pattern: str = Field(".*", description="regular expression on image names (search)")
    classes: dict[str, int] = Field(default_factory=lambda: {"lesion": 1},
                                    description="class name -> label value in the reference label files")
    labels: LabelSource = Field(default_factory=LabelSource)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    baselines: list[Literal["otsu", "max_entropy", "watershed", "fast_marching"]] = Field(default_factory=list)
    fallback: Literal["none", "otsu", "max_entropy", "watershed", "fast_marching"] = "otsu"
    dicom_seg: bool = Field(True, description="write a DICOM SEG per segmented DICOM series (extra segment-export)")
    nnunet: NnunetConfig = Field(default_factory=NnunetConfig)

    @field_validator("image_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("classes")
    @classmethod
    def _valid_classes(cls, value: dict[str, int]) -> dict[str, int]:
        if not value:
            raise ValueError("name at least one class")
        values = list(value.values())
        if any(v <= 0 or v > 255 for v in values) or len(set(values)) != len(values):
            raise ValueError("class label values must be distinct integers in 1..255 (0 is background)")
        return value

    @model_validator(mode="after")
    def _trainable(self) -> SegmentationConfig:
        if self.method in MODEL_METHODS and self.labels.source == "none" and self.training.source != "synthetic":
            raise ValueError(f"method {self.method!r} is trained: set labels.source to 'inbox' or 'dataset' "
                             "(or training.source to 'synthetic')")
        if self.training.source == "synthetic" and (self.method != "dynunet" or len(self.classes) != 1):
            raise ValueError("training.source 'synthetic' trains a one-class 'dynunet' lesion model")
        if self.nnunet.enabled and self.labels.source == "none":
            raise ValueError("nnunet.enabled needs labels (labels.source 'inbox' or 'dataset')")
        return self

    @property
    def uses_model(self) -> bool:
        return self.method in MODEL_METHODS

    @property
    def label_values(self) -> list[int]:
        """Background first, then the class values in catalog order."""
        return [0, *self.classes.values()]

    def selects(self, name: str, modality: str) -> bool:
        return modality.upper() in {m.upper() for m in self.modalities} and re.search(self.image_pattern, name) is not None
