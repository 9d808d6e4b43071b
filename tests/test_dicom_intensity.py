"""dcm2niix intensity-scaling and image-component rules, without the reference corpus."""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.medical.io.dicom_components import classic_component, from_image_type
from imaging_pipelines.medical.io.dicom_intensity import philips_precise, stack_intensity


def test_philips_precise_values_are_display_over_rs_times_ss():
    slope, inter = philips_precise(1.29304029304029, 0.0, 0.03586973994970322)
    assert slope == pytest.approx(1 / 0.03586973994970322, rel=1e-6) and inter == 0.0
    # with an intercept: FP = (PV*RS + RI) / (RS*SS)
    slope, inter = philips_precise(2.0, -100.0, 0.25)  # FP = (2 PV - 100) / 0.5 = 4 PV - 200
    assert (slope, inter) == pytest.approx((4.0, -200.0))
    assert philips_precise(2.0, 3.0, 0.0) == (2.0, 3.0)  # SS = 0: display values kept


def _planes(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, size=(4, 5), dtype=np.uint16) for _ in range(n)]


def test_uniform_scaling_keeps_stored_values_and_scale_factors():
    planes = _planes()
    si = stack_intensity(iter(planes), planes[0].dtype, [0.5] * 3, [-10.0] * 3, [None] * 3, (3, 4, 5), "SIEMENS",
                         enhanced=False)
    assert si.stored.dtype == np.uint16 and np.array_equal(si.stored[1], planes[1])
    assert (si.scl_slope, si.scl_inter) == (0.5, -10.0)
    assert np.allclose(si.physical, np.stack(planes) * 0.5 - 10.0)
    assert si.metadata()["method"] == "RescaleSlope/RescaleIntercept"


def test_philips_private_scale_slope_is_used_and_recorded():
    planes = _planes()
    si = stack_intensity(iter(planes), planes[0].dtype, [2.0] * 3, [0.0] * 3, [4.0] * 3, (3, 4, 5),
                         "Philips Medical Systems", False)
    assert si.scl_slope == pytest.approx(0.25)
    assert np.allclose(si.physical, np.stack(planes) / 4.0)
    assert "2005,100E" in si.metadata()["method"]


def test_varying_scaling_gives_float_per_image():
    planes = _planes()
    si = stack_intensity(iter(planes), planes[0].dtype, [1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [None] * 3, (3, 4, 5),
                         "GE", False)
    assert si.stored.dtype == np.float32 and (si.scl_slope, si.scl_inter) == (1.0, 0.0)
    assert np.allclose(si.physical[2], planes[2] * 3.0 + 1.0)


def test_integral_scaling_stays_integer():
    planes = [np.full((2, 2), 1000, dtype=np.int16)] * 2
    si = stack_intensity(iter(planes), planes[0].dtype, [1.0, 1.0], [-1024.0, -1024.0], [None, None], (2, 2, 2),
                         "GE", False)
    assert si.physical.dtype == np.int16 and int(si.physical[0, 0, 0]) == -24
    assert si.stored is si.physical and (si.scl_slope, si.scl_inter) == (1.0, 0.0)  # one array kept


@pytest.mark.parametrize("image_type,expected", [
    (("ORIGINAL", "PRIMARY", "P", "ND"), "phase"), (("ORIGINAL", "PRIMARY", "M", "ND"), "magnitude"),
    (("ORIGINAL", "PRIMARY", "R"), "real"), (("DERIVED", "IMAGINARY"), "imaginary"),
    (("DERIVED", "PRIMARY", "B0", "MAP"), "fieldmap_hz")])
def test_component_from_image_type(image_type, expected):
    assert from_image_type(image_type) == expected


def test_ge_b0map_first_locations_are_the_field_map():
    def header(instance):
        return {"Manufacturer": "GE MEDICAL SYSTEMS", 0x0019109E: "B0map", 0x0021104F: 16,
                "ImagesInAcquisition": 32, "InstanceNumber": instance}
    assert classic_component(header(3), ("ORIGINAL", "PRIMARY", "OTHER")) == "fieldmap_hz"
    assert classic_component(header(17), ("ORIGINAL", "PRIMARY", "OTHER")) == "magnitude"
    ge_phase = {"Manufacturer": "GE MEDICAL SYSTEMS", 0x0043102F: 1}
    assert classic_component(ge_phase, ("ORIGINAL",)) == "phase"
