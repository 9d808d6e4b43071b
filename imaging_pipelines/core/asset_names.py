"""Every asset name of the pipeline, in one place. An asset's key is ``[<dataset id>, <name>]`` and its
partition stores live at ``<storage root>/<dataset id>/<name>/<partition>.zarr``.

Medical chain (partitioned by pseudonymous patient unless noted)::

    ingested_scans -> preprocessed -> registered -> segmentation -> segmentation_evaluation -> patient_report
    registration_model, segmentation_model, nnunet_dataset          (unpartitioned models)
    imported_model -> segmentation                                  (observable source: a pretrained model)
    segmentation_cohort_evaluation, cohort_report                   (unpartitioned cohort summaries)
    classifier_model -> classification -> classification_evaluation (catalog `classification:`, off by default)

Remote-sensing chain (partitioned by tile ``<scene>__r<row>_c<col>`` unless noted)::

    scene_tiles -> analysis_ready_tiles -> tile_segmentation
    land_cover_model                                                (unpartitioned model)
    scene_outputs -> scene_report -> cohort_report                  (unpartitioned scene summaries)
    classifier_model -> classification -> classification_evaluation (catalog `classification:`, off by default)
"""

# medical, per patient
INGESTED = "ingested_scans"
PREPROCESSED = "preprocessed"
REGISTERED = "registered"
SEGMENTED = "segmentation"
EVALUATED = "segmentation_evaluation"
PATIENT_REPORT = "patient_report"
# medical, models and cohort summaries
REGISTRATION_MODEL = "registration_model"
SEGMENTATION_MODEL = "segmentation_model"
NNUNET_DATASET = "nnunet_dataset"
IMPORTED_MODEL = "imported_model"
COHORT_EVALUATION = "segmentation_cohort_evaluation"
COHORT_REPORT = "cohort_report"
# remote sensing, per tile
TILES = "scene_tiles"
PREPARED = "analysis_ready_tiles"
TILE_SEGMENTATION = "tile_segmentation"
# remote sensing, model and scene summaries
TILE_MODEL = "land_cover_model"
SCENE_OUTPUTS = "scene_outputs"
SCENE_REPORTS = "scene_report"
# image-level classification, both domains: model (unpartitioned), per partition, evaluation (unpartitioned)
CLASSIFIER_MODEL = "classifier_model"
CLASSIFICATION = "classification"
CLASSIFICATION_EVALUATION = "classification_evaluation"

COHORT_SUMMARIES = (COHORT_EVALUATION, COHORT_REPORT, SCENE_OUTPUTS, SCENE_REPORTS, CLASSIFICATION_EVALUATION)
