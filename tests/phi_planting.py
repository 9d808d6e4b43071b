"""Plant a distinct, searchable value in every attribute of the PS3.15 Basic Profile table (test helper).

Every attribute of ``basic_profile.csv`` gets a value of its VR; text-like values are unique tokens such as
``PHIQ0042Z``, dates unique days of 1931-1960, UIDs ``1.2.999.<n>.77``. Sequences get one item holding a
coded entry, a person name and a private attribute (nested PHI). The repeating groups (curve 50xx, overlay
60xx) and a private block are planted too. ``needles`` lists every value that can be searched for in bytes
(binary numbers cannot).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from imaging_pipelines.medical.deid import profile_table

# the references a SEG/SR keeps by design (asserted separately) and the file meta / command groups
KEPT_REFERENCES = {0x0020000D, 0x0020000E, 0x00080018, 0x00200052}
# enumerated values highdicom validates when it copies them: a valid value, not searchable
ENUMERATED = {0x00100040: "O"}  # PatientSex
DESCRIPTOR = "QUIMBY^ZEBEDEE 1945-03-12 T1 AX"
DESCRIPTOR_NEEDLES = ("QUIMBY", "ZEBEDEE", "1945-03-12")
DESCRIPTOR_KEYWORDS = ("SeriesDescription", "ProtocolName", "StudyDescription")


@dataclass
class Planter:
    count: int = 0
    needles: set[str] = field(default_factory=set)
    planted_tags: set[int] = field(default_factory=set)

    def token(self) -> str:
        self.count += 1
        token = f"PHIQ{self.count:04d}Z"
        self.needles.add(token)
        return token

    def value(self, vr: str):
        n = self.count + 1
        if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "PN"):
            return self.token()
        self.count += 1
        if vr == "UR":
            value = f"http://phiq{n:04d}z.example"
        elif vr == "DA":
            value = (dt.date(1931, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")
        elif vr == "DT":
            value = (dt.date(1931, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d") + f"101112.{n:06d}"
        elif vr == "TM":
            value = f"{10 + n % 13:02d}{n % 60:02d}{(7 * n) % 60:02d}.{n:06d}"
        elif vr == "IS":
            value = str(700000000 + n)
        elif vr == "DS":
            value = f"{800000 + n}.25"
        elif vr == "UI":
            value = f"1.2.999.{n}.77"
        elif vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            token = self.token()
            return (token + " " * (8 - len(token) % 8)).encode()
        elif vr == "AS":
            return "047Y"
        elif vr in ("FL", "FD"):
            return 7.0
        elif vr == "AT":
            return 0x00100010
        else:  # US, SS, UL, SL, UV, SV
            return 7
        self.needles.add(value if vr != "DT" else value[:8])
        return value

    def item(self) -> Dataset:
        item = Dataset()
        item.CodeValue = self.token()
        item.CodingSchemeDesignator = "99PHI"
        item.CodeMeaning = self.token()
        item.PersonName = self.token()
        block = item.private_block(0x0011, "PHI NESTED CREATOR", create=True)
        block.add_new(0x01, "LO", self.token())
        return item

    def plant(self, ds: Dataset) -> None:
        """Every table attribute (except :data:`KEPT_REFERENCES` and groups 0000/0002/0004) into ``ds``."""
        table = profile_table()
        descriptors = {int(tag_for_keyword(k)) for k in DESCRIPTOR_KEYWORDS}  # planted below, with a name and a date
        skipped = KEPT_REFERENCES | descriptors
        tags = [t for t in table.exact if t not in skipped and t >> 16 not in (0x0000, 0x0002, 0x0004)]
        tags += [0x50000022, 0x60003000, 0x60004000]  # curve description, overlay data, overlay comments
        for tag in tags:
            try:
                vr = dictionary_VR(tag).split(" or ")[0]
            except KeyError:
                vr = "LO"  # an attribute newer than pydicom's dictionary
            if tag in ENUMERATED:
                ds[tag] = DataElement(tag, vr, ENUMERATED[tag])
            elif vr == "SQ":
                ds[tag] = DataElement(tag, "SQ", DicomSequence([self.item()]))
            else:
                ds[tag] = DataElement(tag, vr, self.value(vr))
            self.planted_tags.add(tag)
        block = ds.private_block(0x0009, "PHI CREATOR", create=True)
        block.add_new(0x01, "LO", self.token())
        block.add_new(0x02, "SQ", DicomSequence([self.item()]))
        for keyword in DESCRIPTOR_KEYWORDS:
            setattr(ds, keyword, DESCRIPTOR)
        self.planted_tags |= descriptors
        self.needles.update(DESCRIPTOR_NEEDLES)
