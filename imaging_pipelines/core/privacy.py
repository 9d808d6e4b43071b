"""Pseudonymisation: patient identifiers become keyed hashes before they reach any key, path, log or store.

The key comes from the environment variable ``IMAGING_PIPELINES_PSEUDONYM_KEY``. There is no default: a
missing or empty key is an error (:class:`PseudonymKeyError`) when the definitions load and whenever a
pseudonym is made. The documented, public development key is used only after an explicit opt-in
(``IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY=1``, or ``privacy: {allow_development_key: true}`` in the deployment
file); the demo and the test suite opt in. It gives no protection (anyone can hash candidate IDs with it), so
every materialisation made under it says so in its metadata (:func:`key_status`). Keep the production key:
changing it changes every partition key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

PSEUDONYM_KEY_ENV = "IMAGING_PIPELINES_PSEUDONYM_KEY"
ALLOW_DEVELOPMENT_KEY_ENV = "IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY"
DEVELOPMENT_KEY = "imaging-pipelines-development-key"  # documented in docs/privacy.md; not a secret
DEVELOPMENT_KEY_STATUS = "development (NOT for patient data)"
SECRET_KEY_STATUS = f"secret ({PSEUDONYM_KEY_ENV})"
MIN_KEY_LENGTH = 16  # characters; a short key can be guessed as easily as the IDs it protects


class PseudonymKeyError(RuntimeError):
    """No usable pseudonym key: the message names the environment variable and the opt-in."""


def development_key_allowed() -> bool:
    """Whether the public development key was opted into (``IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY`` = 1/true/yes)."""
    return os.environ.get(ALLOW_DEVELOPMENT_KEY_ENV, "").strip().lower() in ("1", "true", "yes")


def allow_development_key() -> None:
    """Opt this process (and the processes it starts) into the public development key: demo and tests only."""
    os.environ[ALLOW_DEVELOPMENT_KEY_ENV] = "1"


def using_development_key() -> bool:
    """True when pseudonyms are made with the public development key (no key set, opt-in given)."""
    return not os.environ.get(PSEUDONYM_KEY_ENV, "").strip()


def pseudonym_key() -> bytes:
    """The HMAC key: ``IMAGING_PIPELINES_PSEUDONYM_KEY``; the development key only after the opt-in.
    Raises :class:`PseudonymKeyError` when the key is missing or empty (or shorter than
    :data:`MIN_KEY_LENGTH`) without the opt-in."""
    key = os.environ.get(PSEUDONYM_KEY_ENV, "").strip()
    if key:
        if len(key) < MIN_KEY_LENGTH:
            raise PseudonymKeyError(f"{PSEUDONYM_KEY_ENV} is too short ({len(key)} characters; at least "
                                    f"{MIN_KEY_LENGTH}): use a long random secret, e.g. `openssl rand -hex 32`")
        return key.encode()
    if development_key_allowed():
        return DEVELOPMENT_KEY.encode()
    state = "empty" if PSEUDONYM_KEY_ENV in os.environ else "not set"
    raise PseudonymKeyError(
        f"{PSEUDONYM_KEY_ENV} is {state}: set it to a long random secret (e.g. `openssl rand -hex 32`) and keep it; "
        f"for demos and tests only, opt into the public development key with {ALLOW_DEVELOPMENT_KEY_ENV}=1 "
        "(or `privacy: {allow_development_key: true}` in the deployment file)")


def key_status() -> str:
    """What the pseudonyms are made with, for metadata: :data:`DEVELOPMENT_KEY_STATUS` or
    :data:`SECRET_KEY_STATUS` (raises :class:`PseudonymKeyError` when neither is usable)."""
    pseudonym_key()
    return DEVELOPMENT_KEY_STATUS if using_development_key() else SECRET_KEY_STATUS


def pseudonymise(identifier: str, namespace: str = "patient") -> str:
    """Stable pseudonym ``p<16 hex>`` for an identifier: HMAC-SHA256 under the configured key.

    ``namespace`` keeps pseudonyms of different kinds of identifier apart (a DICOM PatientID vs a folder name).
    """
    msg = f"{namespace}\x00{identifier.strip()}".encode()
    return "p" + hmac.new(pseudonym_key(), msg, hashlib.sha256).hexdigest()[:16]


_SAFE = re.compile(r"[^A-Za-z0-9]+")


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case ``[a-z0-9_]`` slug of a free-text label (series description, file stem)."""
    s = _SAFE.sub("_", text).strip("_").lower()
    return s[:max_len] or "unnamed"


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\"|b'[^']*')")


def redact_quoted(message: str, max_len: int = 300) -> str:
    """A third-party error message with quoted values replaced by ``<value>`` (they may echo header
    content such as names or dates) and cut to ``max_len`` characters."""
    text = _QUOTED.sub("<value>", str(message))
    return text if len(text) <= max_len else text[: max_len - 3] + "..."


# Protocol vocabulary that can never identify anyone: the only words of a free-text DICOM descriptor
# (SeriesDescription, ProtocolName) that reach image names, stores, metadata and reports.
SAFE_DESCRIPTOR_TOKENS = frozenset("""
t1 t1w t2 t2w t2star pd pdw flair stir dwi dti adc trace b0 b1000 swi swan bold epi fmri rest resting asl pcasl
perfusion dsc dce mra tof pc angio venous arterial phase cine gre spgr fspgr mprage mp2rage tfe tse fse se ir
space cube vibe lava dixon water fat inphase outphase opp in out ffe bffe fiesta trufi haste ssfp sense grappa
ax axi axial sag sagittal cor coronal obl oblique tra transverse mpr mip minip reformat recon 2d 3d 4d iso hr
pre post gd contrast c ce nc plain delayed early late wash
ct mr mri pet spect cta ctp cbf cbv mtt tmax nm us cr dx mg xa rf pt sr seg
head brain neuro spine cervical thoracic lumbar chest thorax lung lungs abdomen abd pelvis liver kidney renal
heart cardiac cardio knee hip shoulder ankle wrist hand foot neck orbit orbits sinus iac pituitary prostate
breast bone soft tissue body whole wb extremity
std standard sharp smooth soft lung bone kernel thin thick low dose ld hd routine
localizer loc scout survey topogram calibration cal map maps mapping fieldmap b0map
demo image series task echo mag magnitude real imag diff
pe ap pa lr rl hf fh si""".split())
_DESCRIPTOR_NUMBER = re.compile(r"^(\d{1,2}(mm|d|t|ch)|[bse]\d{1,4})$")  # 5mm, 3d, 3t, b800, e2; never a bare number


def clean_descriptor(text: str, max_len: int = 40) -> str:
    """The safe part of a free-text DICOM descriptor (SeriesDescription, ProtocolName): its lower-case words
    that are in :data:`SAFE_DESCRIPTOR_TOKENS` or short parameter numbers (``5mm``, ``3d``, ``b800``), joined
    by ``_``. Anything else (names, dates, IDs, free comments) is dropped. When no word survives, ``desc_`` +
    8 hex digits of a keyed hash of the text stand in (stable under one key, not reversible without it).
    ``""`` for an empty descriptor."""
    words = [w for w in _SAFE.sub(" ", text).lower().split() if w]
    if not words:
        return ""
    kept = [w for w in words if w in SAFE_DESCRIPTOR_TOKENS or _DESCRIPTOR_NUMBER.match(w)]
    if kept:
        return "_".join(kept)[:max_len].strip("_")
    return "desc_" + pseudonymise(text, "descriptor")[1:9]
