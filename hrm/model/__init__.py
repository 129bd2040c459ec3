"""The models: the architecture interface and registry, HRM, layers, ACT, losses, the puzzle-embedding
optimiser, checkpoint I/O.

Entry points: :func:`get_architecture` (an ``arch.name`` -> its :class:`Architecture`), :func:`register`
(a new architecture), :class:`HRMConfig`, :class:`HRM` (model + ACT + loss head, with ``predict``),
:func:`load_checkpoint` (any registered architecture), :func:`save_checkpoint` (each step_N with a verified
``step_N.sha256``), :class:`SparseEmbeddingSignSGD`.
"""

from hrm.model.checkpoint import (CheckpointError, atomic_write, hash_file, load_checkpoint, read_verified, save_checkpoint,
                                  step_files, write_verified)
from hrm.model.act import ACTModel, Prediction, RecurrentModel
from hrm.model.base import Architecture, ArchOption, Carry, InnerCarry, Recurrence, RowMemory, run_segments
from hrm.model.device import DeviceError, resolve_device
from hrm.model.hrm import HRM, HRMACT, HRMConfig, HRMInner
from hrm.model.registry import (UnknownArchitecture, architecture_for, architecture_of, architecture_of_arch, get_architecture,
                                register, registered_names)
from hrm.model.losses import ACTLossHead, ACTStepResult, softmax_cross_entropy, stablemax_cross_entropy
from hrm.model.sparse_embedding import CastedSparseEmbedding, SparseEmbeddingSignSGD

__all__ = [
    "ACTLossHead",
    "ACTModel",
    "ArchOption",
    "Architecture",
    "Recurrence",
    "RecurrentModel",
    "RowMemory",
    "UnknownArchitecture",
    "architecture_for",
    "architecture_of",
    "architecture_of_arch",
    "get_architecture",
    "register",
    "registered_names",
    "run_segments",
    "ACTStepResult",
    "Carry",
    "CastedSparseEmbedding",
    "CheckpointError",
    "HRM",
    "HRMACT",
    "HRMConfig",
    "HRMInner",
    "InnerCarry",
    "Prediction",
    "SparseEmbeddingSignSGD",
    "atomic_write",
    "hash_file",
    "load_checkpoint",
    "read_verified",
    "resolve_device",
    "DeviceError",
    "save_checkpoint",
    "softmax_cross_entropy",
    "stablemax_cross_entropy",
    "step_files",
    "write_verified",
]
