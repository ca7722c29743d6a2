"""The benchmark CNN fine-tuned for faithful Grad-CAM maps with ID-ExpO {cite}`yoshikawa2024idexpo`, and its control.

Registered when imported (``medlit.benchmark`` does), not by ``medlit.models``: this module's code reaches into the
metrics, and the kinds trained from scratch should not be retrained when a metric changes.

Model kinds ``resnet10_idexpo`` and ``resnet10_finetuned`` start from the trained ``resnet10`` of the same data
set and profile (``ModelConfig.base`` names its cache entry, so a retrained base retrains them) and take the same
fine-tuning steps: :data:`FINETUNE_EPOCHS` pass over the training split in batches of :data:`FINETUNE_BATCH`, SGD
with Nesterov momentum 0.9, weight decay 5e-4 and a learning rate of :data:`FINETUNE_LR`, as in the authors' code.
The loss is the cross-entropy plus ``LAMBDA2`` times the map-norm penalty, and for ``resnet10_idexpo`` plus
``LAMBDA1 (c_ins + c_del)`` (:mod:`medlit.idexpo`); the control has ``lambda1 = 0``, so what differs between the
two is the regulariser's doing, not the extra training's.

Grad-CAM in the loop is the book's (``gradcam``: the last stage, bilinear upsampling) for the labelled class, as
the authors explain the label: the activations stay in the graph, the channel weights (mean gradients) are taken
without a second-order graph, as in the authors' code, so the loss reaches the weights through the activations.
Batch norm keeps the base model's statistics during fine-tuning (eval mode): the perturbed copies of the soft
curves would otherwise shift them.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from medlit.data.sample import SampleSet
from medlit.idexpo import idexpo_terms
from medlit.models.config import ModelConfig
from medlit.models.registry import MODEL_KINDS, register_model_kind
from medlit.models.resnet import CAPABILITIES
from medlit.models.training import evaluate
from medlit.paths import models_dir

BASE_KIND = "resnet10"
LAMBDA1, LAMBDA2 = 0.01, 1e-4  # the authors' example configuration
FINETUNE_LR = 1e-4
FINETUNE_EPOCHS = 1
FINETUNE_BATCH = 16
TEMPERATURE = 1.0
# Thresholds (soft-curve steps): the paper's 64 from the full profile's 256 px up; fewer at the CPU profiles'
# sizes (8 at the quick profile's 128 px, 4 below), where every step costs a forward and a backward pass.
FULL_THRESHOLDS = 64


def thresholds_for(image_size: int) -> int:
    """The number of soft-curve steps used at ``image_size``."""
    return FULL_THRESHOLDS if image_size >= 256 else 8 if image_size >= 128 else 4


def base_weights(config: ModelConfig) -> dict:
    """The cached weights of the model ``config`` is fine-tuned from (``config.base``, a cache file stem)."""
    if not config.base:
        raise ValueError(f"{config.name}: a fine-tuned model kind needs ModelConfig.base (the model it starts from)")
    path = models_dir() / f"{config.base}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{config.name} is fine-tuned from {config.base}, which is not in the model cache "
                                f"({path}); medlit.benchmark.prepare trains it first")
    return load_file(path)


def gradcam_in_graph(model, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, maps): one forward pass, and Grad-CAM maps of ``target`` that stay differentiable with respect to
    the model's parameters through the last stage's activations (the channel weights are constants)."""
    store = {}
    layer = model.feature_layers["last"]
    handle = layer.register_forward_hook(lambda module, inputs, output: store.setdefault("A", output))
    try:
        logits = model(x)
    finally:
        handle.remove()
    activations = store["A"]
    score = logits.gather(1, target.view(-1, 1)).sum()
    gradients = torch.autograd.grad(score, activations, retain_graph=True)[0].detach()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    # bilinear with half-pixel centres, as the book's Grad-CAM (medlit.explain.gradcam.upsample)
    return logits, F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def fine_tune(model, config: ModelConfig, train: SampleSet, val: SampleSet, *, lambda1: float,
              device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """ID-ExpO fine-tuning of ``model`` (already holding the base weights) in place; returns the history."""
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=FINETUNE_LR, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    steps = thresholds_for(config.image_size)
    history = []
    total_steps = FINETUNE_EPOCHS * -(-len(train) // FINETUNE_BATCH)
    bar = tqdm(total=total_steps, desc=f"fine-tuning {config.name}", disable=not progress, unit="batch")
    model.eval()  # batch norm keeps the base model's statistics; gradients still reach every parameter
    for epoch in range(FINETUNE_EPOCHS):
        order = torch.randperm(len(train), generator=generator)
        sums = {"loss": 0.0, "ce": 0.0, "c_ins": 0.0, "c_del": 0.0}
        for start in range(0, len(train), FINETUNE_BATCH):
            idx = order[start:start + FINETUNE_BATCH]
            x, y = train.images[idx].to(device), train.labels[idx].to(device)
            logits, maps = gradcam_in_graph(model, x, y)
            ce = F.cross_entropy(logits, y)
            loss = ce + LAMBDA2 * maps.pow(2).mean()
            if lambda1:
                terms = idexpo_terms(model, x, y, maps, steps=steps, temperature=TEMPERATURE)
                loss = loss + lambda1 * (terms["c_ins"] + terms["c_del"])
                sums["c_ins"] += float(terms["c_ins"].detach()) * len(idx)
                sums["c_del"] += float(terms["c_del"].detach()) * len(idx)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sums["loss"] += float(loss.detach()) * len(idx)
            sums["ce"] += float(ce.detach()) * len(idx)
            bar.update(1)
        scores = evaluate(model, val)
        history.append({"epoch": epoch + 1, **{f"train_{k}": v / len(train) for k, v in sums.items()},
                        "val_auroc": scores["auroc"], "val_accuracy": scores["accuracy"], "lambda1": lambda1,
                        "thresholds": steps})
    bar.close()
    return history


def _recipe(lambda1: float):
    def recipe(model, config: ModelConfig, train: SampleSet, val: SampleSet, *,
               device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
        model.load_state_dict(base_weights(config))
        model.to(device)
        return fine_tune(model, config, train, val, lambda1=lambda1, device=device, progress=progress)

    recipe.__name__ = recipe.__qualname__ = f"idexpo_recipe_lambda1_{lambda1:g}"
    return recipe


def _build(config: ModelConfig):
    """The base kind's network (the same architecture; the recipe loads the base's weights into it)."""
    return MODEL_KINDS[BASE_KIND].build(replace(config, arch=BASE_KIND))


register_model_kind("resnet10_idexpo", recipe=_recipe(LAMBDA1), capabilities=CAPABILITIES, base=BASE_KIND,
                    citation="yoshikawa2024idexpo",
                    long_name=f"MONAI ResNet-10, ID-ExpO fine-tuned (Grad-CAM, lambda1 {LAMBDA1:g})")(_build)
register_model_kind("resnet10_finetuned", recipe=_recipe(0.0), capabilities=CAPABILITIES, base=BASE_KIND,
                    citation="yoshikawa2024idexpo",
                    long_name="MONAI ResNet-10, fine-tuned on the same schedule without the regulariser")(_build)
