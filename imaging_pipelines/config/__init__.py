"""Every schema a user writes: the data catalog (medical, segmentation and remote-sensing blocks), recipes, atlases, the deployment file, and the project's paths. Imports nothing above the core."""
