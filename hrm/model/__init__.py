"""The HRM model: layers, the ACT model, losses, the puzzle-embedding optimiser, checkpoint I/O.

Entry points: :class:`HRMConfig`, :class:`HRM` (model + ACT + loss head, with
``predict``), :func:`load_checkpoint`, :func:`save_checkpoint` (each step_N with a verified ``step_N.sha256``),
:class:`SparseEmbeddingSignSGD`.
"""

from hrm.model.checkpoint import (CheckpointError, atomic_write, hash_file, load_checkpoint, read_verified, save_checkpoint,
                                  step_files, write_verified)
from hrm.model.hrm import HRM, HRMACT, Carry, DeviceError, HRMConfig, HRMInner, InnerCarry, Prediction, resolve_device
from hrm.model.losses import ACTLossHead, ACTStepResult, softmax_cross_entropy, stablemax_cross_entropy
from hrm.model.sparse_embedding import CastedSparseEmbedding, SparseEmbeddingSignSGD

__all__ = [
    "ACTLossHead",
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
