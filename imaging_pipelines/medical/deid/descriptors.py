"""Clean Descriptors (PS3.15 E.3.5): free text reduced to the words of it that are known imaging terms.

A descriptor such as SeriesDescription "DOE^JANE 1945-03-12 T1 AX MPRAGE post" becomes "T1 AX MPRAGE POST":
it is split on every character that is not a letter or digit, and only tokens in :data:`SAFE_TOKENS`
(upper-cased) are kept, in their order, each once. Anything else, names, dates, numbers, IDs, places and
misspellings included, is dropped; a descriptor with no safe token becomes ``""``. A whitelist can only
lose meaning, never let an identifier through (unless a patient is literally named like an imaging term).
"""

from __future__ import annotations

import re

SAFE_TOKENS = frozenset("""
MR MRI CT PET SPECT NM US XR CR DX MG RT SEG SR OT PT
T1 T2 T1W T2W T2STAR PD PDW FLAIR DWI DTI ADC EADC TRACE FA MD SWI GRE SE TSE FSE EPI MPRAGE SPGR BRAVO
BOLD ASL PERF PERFUSION DIFFUSION TOF MRA CTA ANGIO SCOUT LOCALIZER LOC SURVEY STIR DIXON IR VIBE HASTE
SSFP CINE FIESTA TRUFI
AX AXI AXIAL SAG SAGITTAL COR CORONAL OBL OBLIQUE TRA TRANS TRANSVERSE ISO ISOTROPIC MPR MIP MINIP
2D 3D 4D PRE POST CONTRAST GD GAD FS FATSAT FAT WATER IN OUT OPP PHASE MAG MAGNITUDE REAL IMAGINARY
MAP FIELDMAP FIELD B0 B1 B1000 HEAD BRAIN NECK CHEST THORAX LUNG LUNGS ABDOMEN ABD PELVIS SPINE CERVICAL
THORACIC LUMBAR KNEE HIP SHOULDER LIVER KIDNEY KIDNEYS HEART CARDIAC BREAST PROSTATE WHOLE BODY WB LEFT
RIGHT BILATERAL ORBITS SINUS IAC PITUITARY TEMPORAL
ROUTINE PROTOCOL SERIES STUDY SCAN EXAM IMAGE IMAGES RECON SOFT TISSUE BONE STANDARD SHARP SMOOTH THIN THICK
LOW HIGH DOSE RES HR ARTERIAL VENOUS PORTAL DELAYED EARLY LATE DYNAMIC FUNCTIONAL RESTING STATE ENHANCED
NONCONTRAST NON WITH WITHOUT AND OF FOR THE
SEGMENTATION MASK LABEL LABELS LABELMAP BINARY REPORT MEASUREMENT MEASUREMENTS VOLUME VOLUMES VOLUMETRIC
LESION LESIONS TUMOR TUMOUR NEOPLASM GREY GRAY WHITE MATTER CSF TISSUE ORGAN ORGANS AUTOMATIC AI
IMAGING PIPELINES DEMO TEST PHANTOM RESEARCH ANONYMIZED
""".split())

_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def clean_descriptor(text: str, max_len: int = 64) -> str:
    """The safe tokens of ``text`` (upper case, space-separated, first occurrence order, at most ``max_len``
    characters); ``""`` when none is safe."""
    kept: list[str] = []
    for token in _SPLIT.split(str(text).upper()):
        if token in SAFE_TOKENS and token not in kept:
            kept.append(token)
    out = ""
    for token in kept:
        candidate = f"{out} {token}".strip()
        if len(candidate) > max_len:
            break
        out = candidate
    return out
