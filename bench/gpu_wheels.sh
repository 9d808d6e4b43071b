#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on a lent GPU machine and that its image lacks (it has Python 3.12 with
# torch, numpy, scipy, scikit-image, pandas, matplotlib, einops, timm, tqdm, requests, ...; no network).
# Run here, in the repository root; writes .whl/part1 (SimpleITK + MONAI: enough for the training and inference
# sections) and .whl/part2 (nnU-Net and the rest), each under the 64 MiB a device call carries with the working
# tree; the first call installs part1 into /tmp/site, the second (on the still-warm machine) part2.
# Versions follow this project's constraints where it pins them.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# binary or universal wheels, for CPython 3.12 on x86-64
BINARY=(monai==1.6.1 nnunetv2==2.8.1 dynamic-network-architectures batchgeneratorsv2 SimpleITK nibabel blosc2
        ndindex connected-components-3d graphviz yacs future)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl "${BINARY[@]}"
# published as source only: build pure-Python wheels here
python3 -m pip wheel -q --no-deps -w .whl acvl-utils batchgenerators unittest2 linecache2 traceback2
mkdir -p .whl/part1 .whl/part2
mv .whl/simpleitk-*.whl .whl/monai-*.whl .whl/part1/
mv .whl/*.whl .whl/part2/
du -sh .whl/part1 .whl/part2
