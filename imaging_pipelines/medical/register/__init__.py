"""Registration: SimpleITK rigid/affine/B-spline/Demons, elastix (optional extra), learned VoxelMorph-style."""
