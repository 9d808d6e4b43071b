"""Finding nnU-Net trainer classes without importing every trainer module.

nnU-Net's own lookup (``recursive_find_trainer_class_by_name``) imports the trainer modules one by one until it
finds the name, and stops with the first module that fails to import. ``primus`` imports timm, which imports
torchvision; where torchvision does not match the installed torch (as with the pinned CPU torch of this
project), every lookup that reaches it fails, although the trainer asked for lives elsewhere. Here a trainer
is found by reading the trainer sources for ``class <name>(`` and importing only that module; a dotted path
(``package.module.Class``) names a trainer of one's own; nnU-Net's lookup (with ``nnUNet_extTrainer``) is
the last resort. :func:`trainer_lookup` makes ``nnUNetPredictor`` use this lookup while it loads a model.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path
from typing import Iterator


def nnunet_trainer_class(name: str) -> type:
    """The nnU-Net trainer class ``name`` (a class name in nnunetv2, or the dotted path of a trainer class
    importable from Python), importing only the module that defines it. ValueError when there is none."""
    import nnunetv2
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if "." in name:
        module, _, attribute = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"nnU-Net trainer {name!r} cannot be imported: {exc}") from None
    else:
        package_root = Path(nnunetv2.__path__[0]).parent
        pattern = re.compile(rf"^class {re.escape(name)}\(", re.M)
        for path in sorted((package_root / "nnunetv2" / "training" / "nnUNetTrainer").rglob("*.py")):
            if pattern.search(path.read_text(errors="ignore")):
                module = ".".join(path.relative_to(package_root).with_suffix("").parts)
                cls = getattr(importlib.import_module(module), name)
                break
        else:
            from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

            cls = recursive_find_trainer_class_by_name(name)
    if not (isinstance(cls, type) and issubclass(cls, nnUNetTrainer)):
        raise ValueError(f"{name!r} is not an nnU-Net trainer class")
    return cls


@contextlib.contextmanager
def trainer_lookup(dotted_trainer: str | None = None) -> Iterator[None]:
    """While the block runs, ``nnUNetPredictor`` finds the trainer named in a checkpoint with
    :func:`nnunet_trainer_class`; a checkpoint naming the class of ``dotted_trainer`` (``package.module.Class``)
    gets that class. Process-wide for the block's duration (the predictor module's global is restored)."""
    from nnunetv2.inference import predict_from_raw_data

    def find(name: str) -> type:
        if dotted_trainer and dotted_trainer.rpartition(".")[2] == name:
            return nnunet_trainer_class(dotted_trainer)
        return nnunet_trainer_class(name)

    original = predict_from_raw_data.recursive_find_trainer_class_by_name
    predict_from_raw_data.recursive_find_trainer_class_by_name = find
    try:
        yield
    finally:
        predict_from_raw_data.recursive_find_trainer_class_by_name = original
