"""The renderer contract: a motion frame (+ camera and background) -> an image.

Renderers are plain `nn.Module`s (no Lightning). The training system, `erlnet render` and
`erlnet generate` only use this contract, so another renderer (a Gaussian-splatting head, say) can
replace DBF-NeRF by implementing it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class RenderCondition:
    """What drives one batch of frames. B = batch size; D = expression dim of the subject's
    motion representation; H, W = output size.

    expression (B, D); blink (B,) in [0, 1]; rotation (B, 3, 3) and translation (B, 3) metres: the
    head pose X_cam = R X_canonical + t (docs/conventions.md); ref_rotation (3, 3) and
    ref_translation (3,): the subject's reference (first-frame) pose, which the torso follows;
    K (3, 3) intrinsics at the output size; background (B, 3, H, W) in [0, 1].
    """

    expression: torch.Tensor
    blink: torch.Tensor
    rotation: torch.Tensor
    translation: torch.Tensor
    ref_rotation: torch.Tensor
    ref_translation: torch.Tensor
    K: torch.Tensor
    background: torch.Tensor

    def to(self, device: torch.device | str) -> RenderCondition:
        return RenderCondition(**{k: v.to(device) for k, v in vars(self).items()})


@dataclass
class RenderOutput:
    """rgb (B, 3, H, W) in [0, 1] composited over the background; alpha (B, 1, H, W) foreground
    opacity; head_alpha and torso_alpha (B, 1, h, w) accumulated opacities of the branches at the
    feature resolution h x w; extras: anything else a loss or a preview may use."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    head_alpha: torch.Tensor
    torso_alpha: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Renderer(nn.Module, ABC):
    """A person-specific renderer: `forward(cond) -> RenderOutput`.

    Before training, the trainer shows it its subject once through three optional hooks (no-ops
    here), in this order: `set_face` with the subject's neutral face (a renderer may tie its space
    to the landmarks), `set_expression_stats` with all training expressions, and `carve` with the
    training frames' conditions and masks in batches (a renderer may restrict its space to the
    silhouettes)."""

    @abstractmethod
    def forward(self, cond: RenderCondition) -> RenderOutput: ...

    def set_face(self, neutral: torch.Tensor) -> None:
        """neutral (N, 3): the subject's neutral face (landmarks in the canonical head frame, metres)."""

    def set_expression_stats(self, expressions: torch.Tensor) -> None:
        """expressions (T, D) of the training frames."""

    def carve(self, cond: RenderCondition, masks: torch.Tensor) -> None:
        """A batch of training frames: cond with batch B, masks (B, H, W) labels (0 background)."""
