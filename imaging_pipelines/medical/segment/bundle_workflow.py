"""A MONAI bundle's ``ConfigWorkflow`` parsed once and run case after case, keeping its network.

``monai.bundle.run`` (``python -m monai.bundle run``) builds a ``ConfigWorkflow`` from the config files and the
overrides, ``initialize()``s it (parse, the ``initialize`` expressions), ``run()``s and ``finalize()``s it.
:class:`KeptWorkflow` does exactly that for its first case. For every later case it sets the per-case
overrides (the data list, the output folder) in the same parser, calls ``initialize()`` again (MONAI's own
re-parse: every config item is instantiated afresh from the config, so the dataset, data loader,
pre/post-processing, inferer, handlers and evaluator are the bundle's own, new for this case), puts back the
:mod:`torch` modules kept from the first case into the resolver's resolved content, and calls ``run()`` and
``finalize()``. What is skipped is the network's construction (``network_def``, ``$@network_def.to(@device)``,
a ``$torch.jit.load(...)``) and the reloading of weights already in it: a ``CheckpointLoader`` handler that
loads only into kept modules (and whose settings do not depend on the per-case overrides) loaded them in the
first case and is replaced by :class:`AlreadyLoaded` in later ones; every other handler is made anew and runs.

A top-level config item is kept only when all of the following hold (checked on the parsed config after the
first case; ``kept`` is empty otherwise and the caller falls back to ``monai.bundle.run`` per case):

* its resolved value is a ``torch.nn.Module``;
* nothing it refers to, directly or through other items, is one of the per-case overrides (a network built
  from the data list or the output folder differs between cases);
* neither it nor anything it refers to is referred to by the ``initialize`` expressions (they run again
  per case and would act on new objects, not on the kept ones; e.g. ``$@network_def.load_state_dict(...)``).

Assumption, as for any network kept in memory: a run leaves the network as the next run needs it (inference
does not train it; a handler that reloads the checkpoint restores the same weights). A changed model file
is a new model version, so a new :class:`KeptWorkflow` (see ``imported_model.open_model``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


class KeptWorkflow:
    """``ConfigWorkflow(config_file, meta_file, **fixed)`` run once per case with ``per_case`` overrides.

    ``fixed``: overrides that stay the same for every case (``bundle_root``, ``device``); each call of
    :meth:`run_case` sets the ids of its ``per_case`` dict (the same ids every call)."""

    def __init__(self, config_file: Path, meta_file: Path, fixed: dict[str, Any], init_id: str = "initialize",
                 run_id: str = "run", final_id: str = "finalize") -> None:
        from monai.bundle import ConfigWorkflow

        self.workflow = ConfigWorkflow(config_file=str(config_file), meta_file=str(meta_file), init_id=init_id,
                                       run_id=run_id, final_id=final_id, workflow_type=None, **fixed)
        self.bundle_root = str(Path(config_file).parent.parent)
        self.kept: dict[str, Any] = {}  # config id -> torch module (or AlreadyLoaded) reused by later cases
        self.cases = 0
        self.not_reused = ""  # why nothing is kept, once the first case has run

    def run_case(self, per_case: dict[str, Any]) -> None:
        """Run the bundle's workflow with ``per_case`` overrides set (the first case: as ``monai.bundle.run``)."""
        parser = self.workflow.parser
        parser.update(pairs=per_case)
        self.workflow.initialize()
        parser.ref_resolver.resolved_content.update(self.kept)
        path_before = list(sys.path)
        try:
            self.workflow.run()
            self.workflow.finalize()
            if not self.cases:
                self.kept, self.not_reused = reusable_modules(parser, per_case, self.workflow.init_id)
            self.cases += 1
        finally:
            if sys.path.count(self.bundle_root) > path_before.count(self.bundle_root):
                sys.path.remove(self.bundle_root)  # ConfigWorkflow.run inserts the bundle root on every call
            parser.ref_resolver.reset()  # free this case's dataset, evaluator and tensors; kept holds the rest


class AlreadyLoaded:
    """Stands in for a bundle's ``CheckpointLoader`` after the first case: its weights are in the kept network.
    ``load_path``: the checkpoint it loaded (for the log)."""

    def __init__(self, load_path: str) -> None:
        self.load_path = load_path

    def attach(self, engine: Any) -> None:
        """Nothing to register: the kept network already holds the checkpoint's weights."""


def reusable_modules(parser: Any, per_case: dict[str, Any], init_id: str) -> tuple[dict[str, Any], str]:
    """The top-level items of ``parser`` (resolved by a run) that later cases can keep, and if none, why."""
    import torch

    resolved = parser.ref_resolver.resolved_content
    modules = {k: resolved[k] for k in parser.get() if k != parser.meta_key and isinstance(resolved.get(k), torch.nn.Module)}
    if not modules:
        return {}, "no top-level config item is a torch module after a run"
    changing = {normal_id(i) for i in per_case}
    if init_id in parser:  # what the initialize expressions use is made again for every case
        changing |= references(parser, init_id) | {normal_id(init_id)}
    kept = {k: v for k, v in modules.items() if independent(parser, k, changing)}
    if not kept:
        return {}, (f"the torch modules {sorted(modules)} depend on the per-case overrides or on what the "
                    "initialize expressions use")
    return {**kept, **loaded_checkpoints(parser, kept, changing)}, ""


def loaded_checkpoints(parser: Any, kept: dict[str, Any], changing: set[str]) -> dict[str, AlreadyLoaded]:
    """The resolved ``CheckpointLoader`` handlers (any config id) that loaded only into ``kept`` modules and do
    not depend on ``changing`` ids, each with its :class:`AlreadyLoaded` stand-in."""
    from monai.handlers import CheckpointLoader

    found = {}
    for config_id, value in parser.ref_resolver.resolved_content.items():
        if (isinstance(value, CheckpointLoader) and value.load_dict
                and all(any(target is module for module in kept.values()) for target in value.load_dict.values())
                and independent(parser, config_id, changing)):
            found[config_id] = AlreadyLoaded(str(value.load_path))
    return found


def independent(parser: Any, config_id: str, changing: set[str]) -> bool:
    """Whether neither ``config_id`` nor anything it refers to is (inside) one of the ``changing`` ids."""
    return not any(overlaps(r, c) for r in references(parser, config_id) | {normal_id(config_id)} for c in changing)


def references(parser: Any, config_id: str) -> set[str]:
    """Every config id that ``config_id``'s content refers to (``@id``, nested components and expressions),
    followed through the referred items."""
    from monai.bundle.reference_resolver import ReferenceResolver

    seen: set[str] = set()
    todo = [normal_id(config_id)]
    while todo:
        current = todo.pop()
        if current not in parser:
            continue
        for ref in ReferenceResolver.find_refs_in_config(parser.get(current), current):
            ref = normal_id(ref)
            if ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return seen


def normal_id(config_id: str) -> str:
    """``config_id`` with MONAI's current separator (``::``; ``#`` is the older one)."""
    from monai.bundle.reference_resolver import ReferenceResolver

    return ReferenceResolver.normalize_id(config_id)


def overlaps(a: str, b: str) -> bool:
    """Whether config ids ``a`` and ``b`` are the same item or one holds the other."""
    from monai.bundle.utils import ID_SEP_KEY

    return a == b or a.startswith(b + ID_SEP_KEY) or b.startswith(a + ID_SEP_KEY)
