"""Segmentation: U-Net (MONAI DynUNet), classical baselines, metrics, nnU-Net export and DICOM SEG.

* :mod:`imaging_pipelines.medical.segment.unet` / :mod:`~imaging_pipelines.medical.segment.unet_train` - nnU-Net-style planning,
  DynUNet training (Dice + cross-entropy, foreground oversampling) and Gaussian sliding-window inference.
* :mod:`imaging_pipelines.medical.segment.classical` - SimpleITK baselines returning label Volumes on the input grid.
* :mod:`imaging_pipelines.medical.segment.evaluate` - Dice, IoU, HD95 (mm) and volume differences (mL), per label.
* :mod:`imaging_pipelines.medical.segment.nnunet_export` - nnU-Net v2 raw dataset export (optional extra).
* :mod:`imaging_pipelines.medical.segment.dicom_seg` - DICOM SEG output referencing the source series (optional extra).
"""
