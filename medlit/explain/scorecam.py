"""Score-CAM {cite}`wang2020scorecam`: activation maps weighted by the target score of the image they mask.

Reading of the paper (Algorithm 1): each activation map A_k of the feature layer is upsampled bilinearly to the
input size and min-max normalised to [0, 1] (H_k); the increase of confidence is s_k = f_t(x * H_k) - f_t(x_b) with
x_b = 0; the weights are the softmax over channels of s_k; the map is ReLU(sum_k w_k A_k). Here f_t is the explained
score (the target's centred logit, :func:`medlit.explain.targets.explained_score`), the quantity every method and
metric of the benchmark uses, where the paper uses the softmax probability. The masked images are x * H_k as in
the paper (the mask's complement is black): Score-CAM's masks are the model's own activations, not a removal of
evidence, so the protocol substrate does not apply. Since a softmax over k is unchanged by subtracting f_t(x_b)
from every s_k, the baseline term does not change the map; it is computed anyway (one forward pass per batch) to
follow the definition. The official code instead weights by f_t(x * H_k) directly, without the softmax over channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medlit.explain.gradcam import stage_activations_and_gradients, upsample
from medlit.explain.registry import FORWARD_BATCH, register_cam
from medlit.explain.targets import explained_score
from medlit.models.inference import inference_forward


def normalised_upsampled(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) maps -> (N, 1, H, W): bilinear upsampling, then min-max to [0, 1]; constant maps become 0.

    A map counts as constant when its range is below 1e-5 of its largest magnitude: upsampling a constant (e.g. a
    1 x 1 map) leaves rounding noise that min-max scaling would blow up to [0, 1].
    """
    up = F.interpolate(activations, size=size, mode="bilinear", align_corners=False)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    varies = span > 1e-5 * torch.maximum(lo.abs(), hi.abs())
    return torch.where(varies, (up - lo) / torch.where(varies, span, torch.ones_like(span)), torch.zeros_like(up))


# forward passes: one to read the activations + one per channel of the stage (resnet10: 128, 64, 32 channels)
@register_cam("scorecam", family="activation", citation="wang2020scorecam", long_name="Score-CAM",
              forward_passes={"last": 129, "last-1": 65, "last-2": 33}, backward_passes=0)
def scorecam(model, x: torch.Tensor, target: torch.Tensor, batch_size: int = FORWARD_BATCH,
             stage: str = "last") -> torch.Tensor:
    """ReLU(sum_k softmax_k(f_t(x * H_k) - f_t(0)) A_k), upsampled bilinearly to the input size; no normalisation.

    Parameters
    ----------
    batch_size : masked images per forward pass (the K masked copies of all images of the batch are chunked)
    """
    activations, _ = stage_activations_and_gradients(model, x, None, stage)
    n, k = activations.shape[:2]
    flat = activations.reshape(n * k, 1, *activations.shape[2:])
    owner = torch.arange(n, device=x.device).repeat_interleave(k)  # image of each (image, channel) pair
    scores = []
    forward = inference_forward(model)  # a frozen copy on the CPU (medlit.models.inference)
    with torch.no_grad():
        for start in range(0, n * k, batch_size):
            rows = owner[start:start + batch_size]
            masked = x[rows] * normalised_upsampled(flat[start:start + batch_size], tuple(x.shape[-2:]))
            scores.append(explained_score(forward(masked), target[rows]))
        black = forward(torch.zeros_like(x[:1])).expand(n, -1)
        baseline = explained_score(black, target)  # (B,)
    increase = torch.cat(scores).view(n, k) - baseline[:, None]
    weights = torch.softmax(increase, dim=1)
    cam = torch.relu((weights[:, :, None, None] * activations.float()).sum(dim=1, keepdim=True))
    return upsample(cam, x).detach()
