"""The architectures, keyed by the official ``arch.name`` of all_config.yaml: the only list of them.

:func:`get_architecture` turns an arch block's name into its :class:`~hrm.model.base.Architecture`
(one clear error listing the registered ones for any other); :func:`architecture_for` finds the
architecture of a config, :func:`architecture_of` that of a model. A new architecture is one module
whose :class:`~hrm.model.base.Architecture` is passed to :func:`register`.
"""

from __future__ import annotations

from typing import Any, Mapping

from hrm.model.base import Architecture
from hrm.model.hrm import ARCH_NAME, ARCHITECTURE as HRM_ARCHITECTURE
from hrm.model.trm import ARCHITECTURE as TRM_ARCHITECTURE

# An arch block without a name is HRM's: the official all_config.yaml always names it, and every
# config this code wrote before the registry (and every TrainConfig arch made from the options) is HRM's.
DEFAULT_ARCH_NAME = ARCH_NAME

_ARCHITECTURES: dict[str, Architecture] = {}


class UnknownArchitecture(ValueError):
    """An ``arch.name`` that no registered architecture accepts."""


def register(architecture: Architecture) -> Architecture:
    """Make ``architecture`` known by its ``name`` (registering the same object again is a no-op)."""
    known = _ARCHITECTURES.get(architecture.name)
    if known is not None and known is not architecture:
        raise ValueError(f"an architecture named {architecture.name!r} is already registered")
    _ARCHITECTURES[architecture.name] = architecture
    return architecture


def registered_names() -> list[str]:
    return sorted(_ARCHITECTURES)


def get_architecture(name: str | None = None) -> Architecture:
    """The architecture of ``arch.name`` (None: HRM, see DEFAULT_ARCH_NAME); another name is an UnknownArchitecture."""
    name = DEFAULT_ARCH_NAME if name is None else name
    if isinstance(name, str) and name in _ARCHITECTURES:
        return _ARCHITECTURES[name]
    for architecture in _ARCHITECTURES.values():
        if architecture.accepts(name):
            return architecture
    raise UnknownArchitecture(f"arch.name is {name!r}; only a registered architecture is supported "
                              f"({', '.join(registered_names())})")


def architecture_of_arch(arch: Mapping[str, Any]) -> Architecture:
    """The architecture an arch block names (no ``name``: HRM)."""
    return get_architecture(arch.get("name"))


def architecture_for(config: Any) -> Architecture:
    """The registered architecture whose config class ``config`` is an instance of."""
    for architecture in _ARCHITECTURES.values():
        if isinstance(config, architecture.config_class):
            return architecture
    raise UnknownArchitecture(f"{type(config).__name__} is the config of no registered architecture "
                              f"({', '.join(registered_names())})")


def architecture_of(model: Any) -> Architecture:
    """The architecture of a model (its ``architecture``), or of a bare segment module (by its config)."""
    model = getattr(model, "_orig_mod", model)
    known = getattr(type(model), "architecture", None)
    return known if isinstance(known, Architecture) else architecture_for(model.config)


def architecture_record(models: Any) -> dict[str, str]:
    """What a run's record says of the architecture of ``models`` (its checkpoints): its ``name`` (arch.name) and
    ``label`` (HRM, TRM); checkpoints of several architectures give theirs joined, in the order they come."""
    found = list(dict.fromkeys(architecture_of(m) for m in models))
    return {"name": ", ".join(a.name for a in found), "label": " + ".join(a.label for a in found)}


register(HRM_ARCHITECTURE)
register(TRM_ARCHITECTURE)
