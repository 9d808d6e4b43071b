"""Segmentation: classical baselines (thresholds, watershed, fast marching, components) and metrics.

* :mod:`imaging_pipelines.segment.classical` - SimpleITK baselines returning label Volumes on the input grid.
* :mod:`imaging_pipelines.segment.evaluate` - Dice, IoU, HD95 (mm) and volume differences (mL), per label.
"""
