"""Image-level classifiers shared by both domains (no dagster import):

- :mod:`~imaging_pipelines.classify.network`: MONAI ResNet / DenseNet121 builders and their Grad-CAM layer;
- :mod:`~imaging_pipelines.classify.train`: class-weighted training, probabilities, save / load;
- :mod:`~imaging_pipelines.classify.metrics`: accuracy, ROC AUC, confusion matrix, calibration (ECE);
- :mod:`~imaging_pipelines.classify.saliency`: Grad-CAM and LayerCAM maps (on ``monai.visualize.GradCAM``) and their scores.

Images are ``(channel, y, x)`` float32 arrays, already resized to the square network input by the domain
code (:mod:`imaging_pipelines.medical.classify`, :mod:`imaging_pipelines.remote_sensing.tile_classify`).
"""
