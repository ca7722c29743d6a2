"""Maps already computed in this process, reused when the same method explains the same image with the same model.

A chapter explains its images once for the scores, and then again for its galleries (the first few images), its
sanity checks (the trained model's maps of the first 8-16 images) and its budget study (the default setting), so
a perturbation method's most expensive maps would be computed two to four times. :func:`explain_batched` looks each
image up here first and computes only the others.

A map is reused only under the same key: the method (its registered function object, so a re-registered or patched
explainer never matches), its settings, the model's *content* (a digest of its class and every parameter and
buffer, recomputed whenever a tensor is modified in place, so randomising or training a model never hits its old
maps), the image's content and the target. Methods with data inputs and cheap methods (fewer than
:data:`MIN_PASSES` passes per image) bypass the memo. Each entry keeps the seconds per image its computation took,
and a reused map reports them again, so a cost table never shows a reused map as free. The memo holds at most
:data:`MAX_BYTES` of maps, least recently used first out. Maps computed in a batch can differ from the same image
explained alone in the last float digit; the cube's own maps are always the first computation in a chapter.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from medlit.models.digest import tensor_bytes

MAX_BYTES = 256 << 20
MIN_PASSES = 8

def image_digests(x: torch.Tensor) -> list[str]:
    """One content digest per image of ``x`` (N, C, H, W), shape and dtype included."""
    header = f"{x.dtype}:{tuple(x.shape[1:])}".encode()
    return [hashlib.blake2b(header + tensor_bytes(image), digest_size=16).hexdigest() for image in x]


class ExplanationMemo:
    """An LRU store of (map, seconds per image) under explanation keys, bounded in bytes."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key) -> tuple[torch.Tensor, float] | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key, explanation: torch.Tensor, seconds: float) -> None:
        if key in self.entries:
            return
        size = explanation.element_size() * explanation.nelement()
        if size > self.max_bytes:
            return
        self.entries[key] = (explanation, seconds)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (old, _) = self.entries.popitem(last=False)
            self.bytes -= old.element_size() * old.nelement()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = self.hits = self.misses = 0


MEMO = ExplanationMemo()


def settings_key(settings: dict) -> str | None:
    """A stable key for an explainer's settings (forward batch size left out: it does not change a map), or None
    when a setting is not a plain value (a tensor, say) and the call should bypass the memo."""
    plain = (bool, int, float, str, type(None))
    items = {k: v for k, v in settings.items() if k != "batch_size"}
    if not all(isinstance(v, plain) or (isinstance(v, tuple) and all(isinstance(e, plain) for e in v))
               for v in items.values()):
        return None
    return repr(sorted(items.items()))
