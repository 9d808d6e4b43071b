"""Domain-randomised (SynthSeg-style) lesion cases on real anatomy (MNI152), for training lesion models that
transfer to real scans. Modules: :mod:`.anatomy` (template + tissue labels), :mod:`.deform` (affine +
elastic), :mod:`.lesions` (irregular lesions with sub-regions), :mod:`.intensity` (random Gaussian mixture,
bias, gamma, blur, noise), :mod:`.acquisition` (thick slices along any axis), :mod:`.generator` (the
seeded generator), :mod:`.train` (on-the-fly training of the DynUNet). World coordinates are LPS mm.
No dagster import here.
"""
