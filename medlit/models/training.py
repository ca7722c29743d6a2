"""Training, evaluation and the on-disk model cache."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from medlit.data.sample import SampleSet
from medlit.models.config import ModelConfig
from medlit.models.registry import MODEL_KINDS, build_model
from medlit.paths import atomic_write_bytes, models_dir


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probability of the positive class for every image, in eval mode."""
    model.eval()
    first = next(model.parameters(), None)  # a parameter-free model runs where the images are
    device = first.device if first is not None else images.device
    out = [torch.softmax(model(images[i:i + batch_size].to(device)), dim=1)[:, 1].cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def evaluate(model: nn.Module, data: SampleSet) -> dict:
    """Accuracy (threshold 0.5) and AUROC of ``model`` on ``data``, with the per-image probabilities."""
    prob = predict_proba(model, data.images)
    labels = data.labels.numpy()
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(((prob >= 0.5).long() == data.labels).float().mean()),
        "auroc": float(roc_auc_score(labels, prob.numpy())) if both_classes else float("nan"),
        "probability": prob,
    }


def cross_entropy_recipe(model: nn.Module, config: ModelConfig, train: SampleSet, val: SampleSet, *,
                         device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """The plain recipe: cross-entropy, AdamW and a one-cycle learning-rate schedule; returns the history.

    Every epoch runs over ``train``; see :func:`fit_cross_entropy`.
    """
    return fit_cross_entropy(model, config, lambda epoch: train, val, device=device, progress=progress)


def fit_cross_entropy(model: nn.Module, config: ModelConfig, epoch_data, val: SampleSet, *,
                      device: torch.device | str = "cpu", progress: bool = True) -> list[dict]:
    """Cross-entropy, AdamW and a one-cycle schedule over ``config.epochs`` epochs; returns the history.

    ``epoch_data(epoch)`` gives the images of each epoch (0-based), all of one length (``config.n_train`` for the
    benchmark's models): the plain recipe returns the training split every time, a recipe with more images
    returns other draws. Batches are drawn from a generator seeded with ``config.seed`` and moved to ``device``
    (where ``model`` already is); validation AUROC is recorded after every epoch.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    first = epoch_data(0)
    steps_per_epoch = -(-len(first) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr,
                                                   total_steps=config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    bar = tqdm(total=config.epochs * steps_per_epoch, desc=f"training {config.name}", disable=not progress,
               unit="batch")
    for epoch in range(config.epochs):
        train = None  # let the previous epoch's images go before the next are loaded (a draw can be 0.5 GB)
        train = first if epoch == 0 else epoch_data(epoch)
        if -(-len(train) // config.batch_size) != steps_per_epoch:
            raise ValueError(f"training {config.name}: epoch {epoch + 1} has {len(train)} images, epoch 1 had "
                             f"{len(first)}; every epoch must have as many batches for the learning-rate schedule")
        model.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for start in range(0, len(train), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = loss_fn(model(train.images[idx].to(device)), train.labels[idx].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
            bar.update(1)
        scores = evaluate(model, val)
        history.append({"epoch": epoch + 1, "train_loss": total / len(train), "val_auroc": scores["auroc"],
                        "val_accuracy": scores["accuracy"]})
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_auroc=f"{scores['auroc']:.3f}")
    bar.close()
    return history


def shuffled_labels(data: SampleSet, seed: int) -> SampleSet:
    """``data`` with its labels permuted by a generator seeded with ``seed`` (images, boxes and masks unchanged).

    The data randomisation test of Adebayo et al. (2018): a model trained on these labels can only memorise, so
    its maps should not look like those of a model that learned the task.
    """
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(data, labels=data.labels[order].clone())


def train_model(config: ModelConfig, train: SampleSet, val: SampleSet, *, device: torch.device | str = "cpu",
                progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Build a fresh model of kind ``config.arch`` on ``device`` and train it with its kind's recipe.

    With ``config.label_shuffle_seed`` set, the recipe sees the training labels permuted (``shuffled_labels``);
    validation keeps its real labels, so the history shows chance accuracy.
    """
    if config.label_shuffle_seed is not None:
        train = shuffled_labels(train, config.label_shuffle_seed)
    model = build_model(config).to(device)
    history = MODEL_KINDS[config.arch].recipe(model, config, train, val, device=device, progress=progress)
    model.eval()
    return model, history


def _cache_paths(config: ModelConfig, cache_dir: Path) -> tuple[Path, Path]:
    stem = f"{config.name}-{config.digest()}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def load_or_train(config: ModelConfig, splits: dict[str, SampleSet], *, cache_dir: Path | None = None,
                  device: torch.device | str = "cpu", progress: bool = True) -> tuple[nn.Module, dict]:
    """The trained model for ``config``: loaded from the cache when present, else trained and cached.

    The model is trained on, or loaded onto, ``device``. Returns the model (eval mode) and its record: config,
    digest, training time, the device it was trained on, history, and the
    validation and test accuracy/AUROC (on the real labels; with ``config.label_shuffle_seed`` set the record
    also gives ``label_shuffle_seed`` and ``test_chance_accuracy``, the share of the commoner test class, which
    such a model's accuracy should be near).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else models_dir()
    weights_path, record_path = _cache_paths(config, cache_dir)
    if weights_path.is_file() and record_path.is_file():
        model = build_model(config)
        try:
            model.load_state_dict(load_file(weights_path))
            model.to(device)
            record = json.loads(record_path.read_text())
        except Exception as err:  # a truncated or foreign file: say which, keep it for inspection
            raise RuntimeError(f"cached model {weights_path} (or its record {record_path.name}) cannot be read: "
                               f"{err}. Delete both files to retrain.") from err
        model.eval()
        return model, record

    started = time.perf_counter()
    model, history = train_model(config, splits["train"], splits["val"], device=device, progress=progress)
    seconds = time.perf_counter() - started
    val, test = evaluate(model, splits["val"]), evaluate(model, splits["test"])
    record = {
        "name": config.name, "digest": config.digest(), "config": config.as_dict(),
        "train_seconds": seconds, "trained_on": str(device), "history": history,
        "val_accuracy": val["accuracy"], "val_auroc": val["auroc"],
        "test_accuracy": test["accuracy"], "test_auroc": test["auroc"],
        "weights": weights_path.name,
    }
    if config.label_shuffle_seed is not None:
        counts = np.bincount(splits["test"].labels.numpy())
        record.update({"label_shuffle_seed": config.label_shuffle_seed,
                       "test_chance_accuracy": float(counts.max() / max(counts.sum(), 1))})
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights_path)
    atomic_write_bytes(record_path, json.dumps(record, indent=2).encode())
    return model, record
