"""The ``segmentation:`` block of a catalog entry (pydantic; no torch import).

Label values are the values found in the reference label files (e.g. the demo phantoms' lesion is 5);
the model writes the same values back, so predictions and references compare directly. Patch sizes are
in voxels, array order (z, y, x); sizes of objects in millilitres (mL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MODEL_METHODS = ("dynunet", "unet", "nnunet")
NNUNET_PLANNERS = ("ExperimentPlanner", "nnUNetPlannerResEncM", "nnUNetPlannerResEncL", "nnUNetPlannerResEncXL")
IMPORTED_KINDS = ("nnunet", "monai_bundle", "project")
BASELINE_METHODS = ("otsu", "max_entropy", "watershed", "fast_marching", "graph_cut")


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
    """nnU-Net v2 (install extra ``segment-export``), in two roles.

    As the segmentation method (``segmentation.method: nnunet``): the ``segmentation_model`` asset runs
    nnU-Net's own fingerprint, planning (``planner``: the default ``ExperimentPlanner`` or the Residual Encoder
    presets ``nnUNetPlannerResEncM`` / ``L`` / ``XL``), preprocessing and training of ``trainer`` on every fold
    of ``folds`` for ``configuration``; the per-patient asset predicts with ``nnUNetPredictor``, ensembling
    those folds, with ``use_mirroring`` and ``tile_step_size`` (fraction of the patch).

    As a side branch (``enabled``): export the labelled cohort in nnU-Net's raw format and verify it
    (``run: export``), also run nnU-Net's fingerprint/plan/preprocess (``plan``), or also train ``trainer``
    on the first of ``folds`` and predict the held-out cases (``train``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    dataset_number: int = Field(500, ge=1, le=999)
    run: Literal["export", "plan", "train"] = "export"
    configuration: str = "3d_fullres"
    planner: Literal[NNUNET_PLANNERS] = "ExperimentPlanner"  # type: ignore[valid-type]
    trainer: str = Field("nnUNetTrainer", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                         description="an nnU-Net trainer class name (e.g. nnUNetTrainer, nnUNetTrainer_5epochs) or "
                                     "the dotted path of a trainer class importable from Python")
    folds: list[int | Literal["all"]] = Field(default_factory=lambda: [0], min_length=1)
    use_mirroring: bool = True
    tile_step_size: float = Field(0.5, gt=0, le=1)

    @field_validator("folds")
    @classmethod
    def _valid_folds(cls, value: list) -> list:
        if any(f != "all" and not 0 <= f <= 4 for f in value) or len(set(map(str, value))) != len(value):
            raise ValueError("folds are distinct values in 0..4 or 'all'")
        return value


class ImportedModelConfig(BaseModel):
    """A pretrained model already on disk, used as it is (``segmentation.method: imported``); nothing is
    downloaded. Labels and their names come from the model's own files (nnU-Net: ``dataset.json`` "labels";
    MONAI bundle: ``configs/metadata.json`` network_data_format outputs channel_def; project: the file).

    ``kind``: ``nnunet`` (an nnU-Net v2 trained-model folder: ``dataset.json``, ``plans.json``,
    ``fold_<f>/<checkpoint>``), ``monai_bundle`` (a bundle folder: ``configs/inference.json`` or ``.yaml``,
    ``configs/metadata.json``, ``models/model.pt`` or ``models/model.ts``) or ``project`` (a ``.pt`` file
    written by this project's segmentation model asset). ``path``: absolute, or relative to the catalog
    file's folder. The nnU-Net settings mean what they mean to ``nnUNetPredictor``; the bundle settings name
    the config ids overridden to feed one image and collect its output.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nnunet", "monai_bundle", "project"]
    path: str = Field(..., min_length=1, description="model folder (nnunet, monai_bundle) or file (project)")
    folds: list[int | Literal["all"]] = Field(default_factory=lambda: [0], min_length=1,
                                              description="nnunet: folds to ensemble (fold_<f> folders)")
    checkpoint: str = Field("checkpoint_final.pth", description="nnunet: checkpoint file name in each fold folder")
    configuration: str | None = Field(None, description="nnunet: configuration the folder was trained with "
                                                        "(checked against the checkpoint; None: any)")
    use_mirroring: bool = Field(True, description="nnunet: test-time mirroring along the trained axes")
    tile_step_size: float = Field(0.5, gt=0, le=1, description="nnunet: sliding-window step (fraction of the patch)")
    bundle_data_id: str = Field("dataset#data", description="monai_bundle: config id of the data list overridden "
                                                            "with the one image")
    bundle_image_key: str = Field("image", description="monai_bundle: key of the image in a data list item")
    bundle_output_dir_id: str = Field("output_dir", description="monai_bundle: config id of the output folder")

    @field_validator("path")
    @classmethod
    def _no_url(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("must be a path on this machine (models are never downloaded at run time)")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("must be a file name inside the fold folder, without a folder part")
        return value

    def resolved(self, catalog_file: str | Path | None) -> ImportedModelConfig:
        """This model with ``path`` made absolute against the folder of ``catalog_file`` (when relative)."""
        path = Path(self.path).expanduser()
        if not path.is_absolute() and catalog_file:
            path = Path(catalog_file).parent / path
        return self.model_copy(update={"path": os.path.normpath(path.absolute())})


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
    marker-based morphological watershed; ``fast_marching``: fast marching from detected seeds;
    ``graph_cut``: s-t min cut with intensity models from the Otsu and max-entropy lesion candidates),
    ``imported`` (the pretrained model of ``model``) or ``none``. An imported model segments the ingested
    images (its own preprocessing does the rest) and writes its own label values, with no post-processing,
    unless ``input`` / ``postprocess`` are given. A trained model method falls back to ``fallback`` while no model is trained. ``baselines`` also run
    on every image and are scored beside the model. ``input``: the stage whose images are segmented.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "dynunet", "unet", "nnunet", "otsu", "max_entropy", "watershed", "fast_marching",
                    "graph_cut", "imported"] = "none"
    model: ImportedModelConfig | None = Field(None, description="the pretrained model of method 'imported'")
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
    baselines: list[Literal["otsu", "max_entropy", "watershed", "fast_marching", "graph_cut"]] = Field(default_factory=list)
    fallback: Literal["none", "otsu", "max_entropy", "watershed", "fast_marching", "graph_cut"] = "otsu"
    dicom_seg: bool = Field(True, description="write a DICOM SEG per segmented DICOM series (extra segment-export)")
    dicom_seg_type: Literal["BINARY", "LABELMAP"] = Field(
        "BINARY", description="DICOM SEG type: BINARY (one 1-bit frame per segment and slice) or LABELMAP (one frame "
                              "per slice holding segment numbers; Label Map Segmentation Storage)")
    dicom_sr: bool = Field(True, description="beside each DICOM SEG, a TID 1500 measurement report (Comprehensive "
                                             "3D SR: volume mL, voxel count, mean/min/max intensity per segment)")
    nnunet: NnunetConfig = Field(default_factory=NnunetConfig)
    meshes: bool = Field(False, description="beside each NIfTI mask, a surface mesh per label in world LPS mm: "
                                            "<image>_<label>.stl and .glb (extra segment-export: trimesh)")

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
    def _imported_model(self) -> SegmentationConfig:
        if self.method == "imported" and self.model is None:
            raise ValueError("method 'imported' needs a 'model' block (kind, path)")
        if self.model is not None and self.method != "imported":
            raise ValueError(f"'model' is only used with method 'imported' (method is {self.method!r})")
        if self.method == "imported":
            if "input" not in self.model_fields_set:
                self.input = "ingested"
            if "postprocess" not in self.model_fields_set:
                self.postprocess = PostprocessConfig(fill_holes=False)
        return self

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
        """True for the methods trained in the pipeline (``dynunet``, ``unet``, ``nnunet``)."""
        return self.method in MODEL_METHODS

    @property
    def uses_imported_model(self) -> bool:
        return self.method == "imported"

    @property
    def label_values(self) -> list[int]:
        """Background first, then the class values in catalog order."""
        return [0, *self.classes.values()]

    def selects(self, name: str, modality: str) -> bool:
        return modality.upper() in {m.upper() for m in self.modalities} and re.search(self.image_pattern, name) is not None
