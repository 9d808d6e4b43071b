"""The NIfTI qform without BLAS / LAPACK (issue 17): closed-form 3x3 / 4x4 arithmetic
(:mod:`imaging_pipelines.core.small_matrix`) whose float32 header fields equal nibabel's ``set_qform``.

Compared field by field (quatern_b/c/d, qoffset_x/y/z, pixdim[0] = qfac, pixdim[1:4] = zooms) as float32 bytes,
so -0.0 and +0.0 differ: over the 17 000 matrices below (random rotations, flips, near-orthogonal, small angles,
near half turns, the 48 axis permutations and signs, tilted permutations, sheared) every field is equal; none
differs by even 1 ulp. Where nibabel's bytes hold LAPACK's arbitrary choices (the sign of a half turn's axis
when a = 0, -0.0 for some zero components, float64 noise in components below 1e-5), the writer computes the
quaternion as nibabel does, with LAPACK: the tests also check which affines take the closed forms.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from nibabel.quaternions import mat2quat

from imaging_pipelines.core import small_matrix as sm
from imaging_pipelines.medical.io.nifti_write import QUAT_NOISE, qform_parameters


def _nibabel_fields(affine: np.ndarray) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_qform(affine, code=1)
    return np.array([hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"], hdr["qoffset_x"], hdr["qoffset_y"],
                     hdr["qoffset_z"], *hdr["pixdim"][:4]], dtype=np.float32).tobytes()


def _our_fields(affine: np.ndarray) -> bytes:
    qfac, zooms, quat, offset = qform_parameters(affine)
    return np.array([*quat, *offset, qfac, *zooms], dtype=np.float32).tobytes()


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _signed_permutations() -> list[np.ndarray]:
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([-1.0, 1.0], repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            out.append(m)
    return out


def _cases(rng) -> dict[str, list[np.ndarray]]:
    """Direction matrices (columns: voxel axes) by kind; the first four kinds must take the closed forms."""
    perms = _signed_permutations()
    return {
        "rotation": [_rotation(rng) for _ in range(3000)],
        "flip (qfac -1)": [_rotation(rng) @ np.diag([1.0, 1.0, -1.0]) for _ in range(3000)],
        "near-orthogonal": [_rotation(rng) + rng.normal(size=(3, 3)) * 10 ** rng.uniform(-9, -3)
                            for _ in range(3000)],
        "oblique 1e-4..0.1 rad": [_axis_angle(rng.normal(size=3), 10 ** rng.uniform(-4, -1)) for _ in range(1000)],
        "small angle 1e-9..1e-4 rad": [_axis_angle(rng.normal(size=3), 10 ** rng.uniform(-9, -4))
                                       for _ in range(1000)],
        "near half turn": [_axis_angle(rng.normal(size=3), np.pi - 10 ** rng.uniform(-9, -1)) for _ in range(2000)],
        "axis permutations and signs": perms,
        "tilted permutations": [p @ _axis_angle(rng.normal(size=3), 10 ** rng.uniform(-6, -1))
                                for p in perms for _ in range(40)],
        "sheared": [_rotation(rng) + rng.normal(size=(3, 3)) * 0.3 for _ in range(500)],
    }


CLOSED_FORM_KINDS = ("rotation", "flip (qfac -1)", "near-orthogonal", "oblique 1e-4..0.1 rad")


def test_qform_fields_equal_nibabel_float32_bytes(monkeypatch):
    rng = np.random.default_rng(17)
    lapack_calls = []
    for name in ("svd", "eigh", "det"):
        real = getattr(np.linalg, name)
        monkeypatch.setattr(np.linalg, name, lambda *a, _real=real, _n=name, **k: (lapack_calls.append(_n),
                                                                                     _real(*a, **k))[1])
    differ: dict[str, int] = {}
    for kind, mats in _cases(rng).items():
        for direction in mats:
            affine = np.eye(4)
            affine[:3, :3] = direction * rng.uniform(0.2, 5.0, 3)
            affine[:3, 3] = rng.normal(size=3) * 100
            del lapack_calls[:]
            ours = _our_fields(affine)  # before nibabel's, which calls np.linalg itself
            used_lapack = bool(lapack_calls)
            theirs = _nibabel_fields(affine)
            if ours != theirs:
                differ[kind] = differ.get(kind, 0) + 1
            if kind in CLOSED_FORM_KINDS:  # LAPACK only for a quaternion component within QUAT_NOISE of 0
                rot = direction / np.sqrt(np.sum(direction * direction, axis=0))
                rot[:, 2] *= np.sign(np.linalg.det(rot))
                u, _, vt = np.linalg.svd(rot)
                smallest = np.min(np.abs(mat2quat(u @ vt)))
                assert used_lapack == (smallest <= 1.0001 * QUAT_NOISE), (kind, direction, smallest, lapack_calls)
    assert not differ, f"float32 qform fields differ from nibabel's: {differ}"


def test_axial_affines_take_no_lapack(monkeypatch):
    """Axial DICOM (RAS diag(-1, -1, 1), with or without a flipped slice axis): closed forms, nibabel's bytes."""
    def boom(*_a, **_k):
        raise AssertionError("LAPACK called")

    fields = {}
    for diag in ([-0.9375, -0.9375, 2.0], [-3.75, 3.75, -5.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]):
        affine = np.diag([*diag, 1.0])
        affine[:3, 3] = [118.125, 143.344, -17.6875]
        with monkeypatch.context() as m:
            for name in ("svd", "eigh", "det"):
                m.setattr(np.linalg, name, boom)
            fields[tuple(diag)] = _our_fields(affine)
        assert fields[tuple(diag)] == _nibabel_fields(affine)


def test_small_matrix_closed_forms():
    rng = np.random.default_rng(3)
    mats = [_rotation(rng) * rng.uniform(0.2, 5, 3) for _ in range(200)] + _signed_permutations()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    for m in mats:
        m4 = np.eye(4)
        m4[:3, :3], m4[:3, 3] = m, rng.normal(size=3)
        assert sm.matmul(flip, m4).tobytes() == (flip @ m4).tobytes()  # signed zeros included
        spacing = rng.uniform(0.3, 3, 3)
        assert sm.matmul(m, np.diag(spacing)).tobytes() == (m @ np.diag(spacing)).tobytes()
        assert sm.det3(m) == pytest.approx(np.linalg.det(m), rel=1e-13, abs=1e-13)
        np.testing.assert_allclose(sm.matmul(sm.inv3(m), m), np.eye(3), atol=1e-12)
        v, w = rng.normal(size=3), rng.normal(size=3)
        assert sm.dot3(v, w) == pytest.approx(float(np.dot(v, w)), rel=1e-14, abs=1e-15)
        assert sm.norm3(v) == pytest.approx(float(np.linalg.norm(v)), rel=1e-15)
        rows = rng.normal(size=(5, 3)) * 100
        np.testing.assert_allclose(sm.rows_dot(rows, v), rows @ v, rtol=1e-13, atol=1e-12)
    for _ in range(200):
        r = _rotation(rng) + rng.normal(size=(3, 3)) * 1e-3
        u, _, vt = np.linalg.svd(r)
        np.testing.assert_allclose(sm.nearest_rotation(r), u @ vt, atol=1e-15)
    assert sm.nearest_rotation(_rotation(rng) + rng.normal(size=(3, 3)) * 0.5 + 0.5) is None  # far from orthogonal
    assert sm.nearest_rotation(np.diag([1.0, 1.0, -1.0])) is None  # not a rotation
    with pytest.raises(ValueError, match="singular"):
        sm.inv3(np.ones((3, 3)))
