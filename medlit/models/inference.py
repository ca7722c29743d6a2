"""The forward engine: a faster no-grad forward for the many perturbed copies that perturbation methods and
metrics score.

Occlusion, feature ablation, RISE, KernelSHAP, LIME, Score-CAM's masked copies and the insertion/deletion curves
push tens to thousands of forwards per image through the model, so they call :func:`inference_forward` instead of
the model. It runs one of these engines (``$MEDLIT_ENGINE``, default ``auto``):

``compiled``
    ``torch.compile`` with fixed batch shapes: a batch is padded up to the next power of 8 (8, 64 or 512) and
    one longer than the device's forward batch (:func:`medlit.device.forward_batch`) runs in chunks of it, so a
    chapter compiles one or two shapes per model instead of one per odd last batch; the weights stay inputs of
    the compiled graph, so a new model of the same kind, or new weights in place, reuse it.
    On a GPU this is the engine that pays; on the CPU it needs a C++ compiler.
``frozen``
    a TorchScript-frozen copy (batch norm folded into the convolutions, convolution and ReLU fused by oneDNN:
    ``torch.jit.freeze`` + ``torch.jit.optimize_for_inference``), made once per weights and input shape. CPU only.
``eager``
    the model as it is.

``auto`` takes the fastest engine measured for the device (:data:`AUTO_ENGINE`, ``scripts/bench_engine.py``).
Every engine runs under ``torch.inference_mode`` and returns ordinary tensors. Only model kinds that declare
``frozen_inference = True`` (no data-dependent Python control flow, so a trace or a graph is the model) get
anything but ``eager``. An engine that fails on a model (no compiler, an operation the tracer cannot handle) warns
once and hands over to the next one: compiled, then frozen, then eager. Gradients never go through an engine.
Results equal the eager model to float rounding (``tests/test_inference_forward.py``: scores within 1e-5 and
the same pointing-game hits).
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from collections.abc import Callable

import torch

from medlit.device import forward_batch
from medlit.models.digest import model_digest

ENGINES = ("auto", "compiled", "frozen", "eager")
ENGINE_VARIABLE = "MEDLIT_ENGINE"
# What ``auto`` runs per device type: measured on the 2-core benchmark machine (scripts/bench_engine.py) for the
# CPU; the compiled graph is the standard choice on a GPU.
AUTO_ENGINE = {"cpu": "frozen", "cuda": "compiled"}
# A compiled engine pads a batch of n to the next power of SMALLEST_BUCKET.
SMALLEST_BUCKET = 8
# Compiled graphs per (model structure, shape) stay few (the buckets), but several model kinds share one
# ``forward`` code object per class; dynamo's default of 8 cached graphs per code object would then run eagerly.
_RECOMPILE_LIMIT = 64

_engines: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_warned: set[tuple[str, str]] = set()


def engine_setting(name: str | None = None) -> str:
    """The engine asked for: ``name``, else ``$MEDLIT_ENGINE``, else ``auto``; ValueError for an unknown one."""
    name = (name or os.environ.get(ENGINE_VARIABLE) or "auto").strip().lower()
    if name not in ENGINES:
        raise ValueError(f"unknown forward engine {name!r} (${ENGINE_VARIABLE}); choose one of {', '.join(ENGINES)}")
    return name


def supports_frozen_inference(model) -> bool:
    """Whether ``model`` may be replaced by a trace or a compiled graph for no-grad forwards (declared by its
    kind)."""
    if not isinstance(model, torch.nn.Module) or not getattr(model, "frozen_inference", False):
        return False
    return next(model.parameters(), None) is not None


def _device_type(model: torch.nn.Module) -> str:
    return next(model.parameters()).device.type


def engine_for(model, name: str | None = None) -> str:
    """The engine :func:`inference_forward` starts with for ``model`` (before any fallback)."""
    name = engine_setting(name)
    if not supports_frozen_inference(model):
        return "eager"
    device = _device_type(model)
    if name == "auto":
        name = AUTO_ENGINE.get(device, "eager")
    if name == "frozen" and device != "cpu":
        return "eager"  # oneDNN fusions are a CPU matter; a GPU trace gains little over the module
    return name


def bucket(n: int) -> int:
    """The batch size a compiled engine runs ``n`` images at: the next power of SMALLEST_BUCKET (8, 64, 512)."""
    size = SMALLEST_BUCKET
    while size < n:
        size *= SMALLEST_BUCKET
    return size


def _source(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` to trace or compile: the engines are kept per model and must not hold the model itself
    alive; a kind may offer a copy made for inference (the ViT's fused attention), the same weights either way."""
    return model.inference_copy().eval() if hasattr(model, "inference_copy") else copy.deepcopy(model).eval()


def _freeze(model: torch.nn.Module, example: torch.Tensor) -> Callable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values recorded as constants
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_source(model), example)))
        frozen(example)  # the first calls compile the fused kernels
    return frozen


def _compile(model: torch.nn.Module, example: torch.Tensor) -> Callable:
    import torch._dynamo

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), _RECOMPILE_LIMIT))
    compiled = torch.compile(_source(model), dynamic=False)
    largest = forward_batch(example.device)  # longer inputs run in chunks of the device's forward batch

    def padded(x: torch.Tensor) -> torch.Tensor:
        if len(x) > largest:
            return torch.cat([padded(x[i:i + largest]) for i in range(0, len(x), largest)])
        n, size = len(x), bucket(len(x))
        if size > n:  # repeat the last image: a fixed shape, and nothing the model has not seen already
            x = torch.cat([x, x[-1:].expand(size - n, *x.shape[1:])])
        return compiled(x.contiguous())[:n]

    padded(example)  # compiles now, so that a failure falls back here rather than mid-chapter
    return padded


_BUILDERS = {"compiled": _compile, "frozen": _freeze}
_FALLBACK = {"compiled": "frozen", "frozen": "eager"}


def _build(model: torch.nn.Module, engine: str, example: torch.Tensor) -> tuple[str, Callable | None]:
    """(engine, forward) for ``model``: the first of ``engine`` and its fallbacks that works; None for eager."""
    was_training = model.training
    model.eval()
    try:
        while engine != "eager":
            if engine == "frozen" and _device_type(model) != "cpu":
                engine = "eager"
                break
            try:
                with torch.inference_mode():
                    return engine, _BUILDERS[engine](model, example)
            except Exception as error:  # no compiler, an operation the tracer cannot handle: say so once
                nxt = _FALLBACK[engine]
                if (type(model).__name__, engine) not in _warned:
                    _warned.add((type(model).__name__, engine))
                    warnings.warn(f"{type(model).__name__}: {engine} forward unavailable "
                                  f"({type(error).__name__}: {str(error).strip()[:300]}); using {nxt}", stacklevel=4)
                engine = nxt
        return "eager", None
    finally:
        model.train(was_training)


def inference_forward(model, engine: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward for no-grad scoring, run by the engine ``engine`` (default ``$MEDLIT_ENGINE``/auto,
    see the module docstring); a model that does not declare ``frozen_inference`` is returned as it is.

    Call the result on inputs shaped like the batches that follow (any batch size); the engine is made at the
    first call for the model's current weights and input shape, and made again when either changes.
    """
    engine = engine_for(model, engine)
    if engine == "eager":
        return model
    per_model = _engines.setdefault(model, {})

    def forward(x: torch.Tensor) -> torch.Tensor:
        key = (engine, model_digest(model), tuple(x.shape[1:]), x.dtype)
        if key not in per_model:
            stale = [k for k in per_model if k[0] == engine]
            for k in stale:  # older weights of this model are of no further use
                del per_model[k]
            per_model[key] = _build(model, engine, x[:1].contiguous())
        chosen, run = per_model[key]
        if run is None:
            return model(x)
        with torch.inference_mode():
            out = run(x)
        return out.clone()  # an ordinary tensor: callers may write it into tensors outside inference mode

    forward.engine = engine  # what was asked for; ``engine_in_use`` tells what runs after fallbacks
    return forward


def engine_in_use(model, x: torch.Tensor, engine: str | None = None) -> str:
    """The engine that actually runs ``model`` on inputs shaped like ``x`` (after any fallback); builds it."""
    forward = inference_forward(model, engine)
    if forward is model:
        return "eager"
    with torch.no_grad():
        forward(x[:1])
    key = (forward.engine, model_digest(model), tuple(x.shape[1:]), x.dtype)
    return _engines[model][key][0]
