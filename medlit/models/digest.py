"""A digest of a model's weights that follows in-place changes: the key of the explanation memo and the frozen
inference copies."""

from __future__ import annotations

import hashlib
import weakref

import torch

__all__ = ["model_digest", "tensor_bytes"]

_model_digests: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_digest(model: torch.nn.Module) -> str:
    """A digest of ``model``'s class and the content of its parameters and buffers.

    Cached per model object and recomputed when any of its tensors was modified in place (torch's version
    counters) or replaced, so the digest always describes the weights the model has now.
    """
    state = model.state_dict(keep_vars=True)
    versions = tuple((key, t.data_ptr(), t._version) for key, t in state.items())
    cached = _model_digests.get(model)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.blake2b(f"{type(model).__module__}.{type(model).__qualname__}".encode(), digest_size=16)
    for key, t in state.items():
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(tensor_bytes(t))
    _model_digests[model] = (versions, digest.hexdigest())
    return digest.hexdigest()


