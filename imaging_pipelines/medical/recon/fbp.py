"""Filtered back-projection of one parallel-beam sinogram (numpy), with a choice of apodisation filter.

Convention (the same as scikit-image ``radon`` / ``iradon``): a sinogram is ``[angle, detector]``; angle
``theta`` (degrees) projects the image onto the detector axis ``t = (x - c) cos(theta) - (y - c) sin(theta)``
in the ``[row=y, column=x]`` layout of the image, with the rotation centre ``c = n_det // 2`` and the
detector bin ``t + n_det // 2``. Reconstructed values are in the sinogram's line-integral units per detector
pixel (a pixel-unit attenuation); the grid has ``n_det x n_det`` pixels, zero outside the inscribed circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def fourier_filter(n_padded: int, name: str) -> np.ndarray:
    """Frequency response (length ``n_padded``, FFT order) of the ramp filter times the ``name`` window.

    The ramp is built from its band-limited spatial kernel (Kak & Slaney eq. 61) so that its DC value is not
    zero, which avoids the offset of a sampled ``|f|``.
    """
    if name not in FBP_FILTERS:
        raise ValueError(f"unknown FBP filter {name!r}; known: {list(FBP_FILTERS)}")
    n = np.concatenate((np.arange(1, n_padded // 2 + 1, 2), np.arange(n_padded // 2 - 1, 0, -2)))
    kernel = np.zeros(n_padded)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * n) ** 2
    response = 2.0 * np.real(np.fft.fft(kernel))
    omega = np.pi * np.fft.fftfreq(n_padded)[1:]  # radians per sample, in (-pi, pi)
    window = np.ones(n_padded)
    if name == "shepp-logan":
        window[1:] = np.sin(omega) / omega
    elif name == "cosine":
        window = np.fft.fftshift(np.sin(np.linspace(0.0, np.pi, n_padded, endpoint=False)))
    elif name == "hamming":
        window = np.fft.fftshift(np.hamming(n_padded))
    elif name == "hann":
        window = np.fft.fftshift(np.hanning(n_padded))
    return response * window


def filter_projections(sinogram: np.ndarray, name: str) -> np.ndarray:
    """Each projection (row of ``[angle, detector]``) convolved with the filter, zero-padded to a power of 2."""
    n_det = sinogram.shape[1]
    n_padded = max(64, int(2 ** np.ceil(np.log2(2 * n_det))))
    padded = np.zeros((sinogram.shape[0], n_padded))
    padded[:, :n_det] = sinogram
    spectrum = np.fft.fft(padded, axis=1) * fourier_filter(n_padded, name)[None, :]
    return np.real(np.fft.ifft(spectrum, axis=1))[:, :n_det]


def fbp_slice(sinogram: np.ndarray, angles_deg: Sequence[float], filter_name: str = "ramp") -> np.ndarray:
    """Reconstruct one ``[angle, detector]`` sinogram into an ``[y, x]`` float64 image of ``n_det^2`` pixels.

    Back-projection uses linear interpolation along the detector; the result is scaled by
    ``pi / (2 n_angles)`` (for angles covering 180 degrees) and set to zero outside the inscribed circle.
    """
    sino = np.asarray(sinogram, dtype=np.float64)
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if sino.ndim != 2 or sino.shape[0] != angles.size:
        raise ValueError(f"sinogram shape {sino.shape} does not match {angles.size} angles ([angle, detector])")
    n_det = sino.shape[1]
    filtered = filter_projections(sino, filter_name)
    centre = n_det // 2
    coords = np.arange(n_det) - centre
    y, x = np.meshgrid(coords, coords, indexing="ij")
    image = np.zeros((n_det, n_det))
    bins = np.arange(n_det, dtype=np.float64) - centre
    for projection, theta in zip(filtered, angles, strict=True):
        t = x * np.cos(theta) - y * np.sin(theta)
        image += np.interp(t, bins, projection, left=0.0, right=0.0)
    image *= np.pi / (2 * angles.size)
    radius = n_det // 2
    image[x**2 + y**2 > radius**2] = 0.0
    return image
