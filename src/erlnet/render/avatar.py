"""The avatar: a trained person-specific renderer plus what it needs to render new motion.

On disk an avatar is a model bundle (`erlnet.io.bundle`, kind "avatar", schema version 1):

```
AVATAR_DIR/
  config.json          renderer type + config, expression dim, image size, fps, representation,
                       source subject, training steps
  model.safetensors    renderer.*         weights
                       meta.background    (S, S, 3) uint8 RGB plate at the image size S
                       meta.K             (3, 3) intrinsics at S
                       meta.ref_rotation  (3, 3), meta.ref_translation (3,) metres
                       meta.neutral       (N, 3) neutral face, canonical head frame, metres
  checkpoints/ ...     training-run files when trained into this directory (not part of the bundle)
```
This module never imports Lightning: rendering needs only torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from erlnet.errors import FormatError, InputError
from erlnet.io.bundle import load_bundle, save_bundle
from erlnet.io.subject import Subject
from erlnet.render.base import RenderCondition, Renderer, RenderOutput
from erlnet.types import Motion

KIND = "avatar"
SCHEMA_VERSION = 1
_META_TENSORS = ("background", "K", "ref_rotation", "ref_translation", "neutral")


class RendererConfig(Protocol):
    """What an avatar needs from a renderer config (`DBFConfig` implements it)."""

    def to_dict(self) -> dict[str, Any]: ...

    def setup(self, expression_dim: int, image_size: int) -> Renderer: ...


def scaled_intrinsics(K: np.ndarray, src_size: int, dst_size: int) -> np.ndarray:
    """K (3, 3) of a `src_size` square image -> K of the same view resized to `dst_size` (float32).

    Pixel edges sit at integer coordinates (cx = size / 2 is the image centre), so resizing is a
    plain scale of the first two rows.
    """
    out = np.array(K, dtype=np.float64)
    out[:2] *= dst_size / src_size
    return out.astype(np.float32)


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8 (area filter when shrinking)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def subject_representation(subject: Subject) -> str:
    """Name of the motion representation of a subject's expression vectors."""
    step = subject.manifest.steps.get("motion")
    return str((step.info.get("representation") if step else None) or "landmarks")


@dataclass
class AvatarMeta:
    """Everything besides the weights that rendering a motion with this avatar needs.

    K (3, 3) intrinsics at `image_size`; ref_rotation (3, 3) / ref_translation (3,) metres: the
    subject's reference pose (first tracked frame), which the torso follows; neutral (N, 3) the
    neutral face in the canonical head frame (metres); background (S, S, 3) uint8 RGB, S = image_size.
    """

    expression_dim: int
    image_size: int
    fps: float
    representation: str
    K: np.ndarray
    ref_rotation: np.ndarray
    ref_translation: np.ndarray
    neutral: np.ndarray
    background: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)  # subject directory and source video hash
    train_steps: int = 0  # optimisation steps the renderer has seen

    @classmethod
    def from_subject(cls, subject: Subject, image_size: int) -> AvatarMeta:
        """Metadata of an avatar trained on `subject` at `image_size`."""
        tr = subject.tracking()
        valid = tr.get("valid", np.ones(len(tr["rotation"]), bool))
        ref = int(np.flatnonzero(valid)[0]) if valid.any() else 0
        size = subject.manifest.size
        return cls(
            expression_dim=int(tr["expression"].shape[1]),
            image_size=int(image_size),
            fps=float(subject.fps),
            representation=subject_representation(subject),
            K=scaled_intrinsics(subject.manifest.K, size, image_size),
            ref_rotation=tr["rotation"][ref].astype(np.float32),
            ref_translation=tr["translation"][ref].astype(np.float32),
            neutral=tr["neutral"].astype(np.float32),
            background=np.ascontiguousarray(resize_rgb(subject.background(), image_size)),
            source={"subject": str(subject.root.resolve()), "sha256": subject.manifest.source.get("sha256", "")},
        )

    def to_json(self) -> dict[str, Any]:
        return {"expression_dim": self.expression_dim, "image_size": self.image_size, "fps": self.fps,
                "representation": self.representation, "source": self.source, "train_steps": self.train_steps}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {f"meta.{k}": torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in _META_TENSORS}

    @classmethod
    def from_parts(cls, info: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path) -> AvatarMeta:
        """Inverse of (`to_json`, `to_tensors`); a missing or misshapen part gives a `FormatError`."""
        try:
            arrays = {k: tensors[f"meta.{k}"].cpu().numpy() for k in _META_TENSORS}
            meta = cls(expression_dim=int(info["expression_dim"]), image_size=int(info["image_size"]),
                       fps=float(info["fps"]), representation=str(info["representation"]),
                       source=dict(info.get("source", {})), train_steps=int(info.get("train_steps", 0)), **arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: avatar metadata incomplete or corrupt (missing {exc})") from None
        s = meta.image_size
        shapes = {"background": (s, s, 3), "K": (3, 3), "ref_rotation": (3, 3), "ref_translation": (3,)}
        for k, want in shapes.items():
            if tuple(getattr(meta, k).shape) != want:
                raise FormatError(f"{where}: avatar {k} has shape {tuple(getattr(meta, k).shape)}, expected {want}")
        return meta

    def background_tensor(self) -> torch.Tensor:
        """(3, S, S) float32 in [0, 1]."""
        return torch.from_numpy(self.background).permute(2, 0, 1).float().div(255.0)


def save_avatar(root: str | Path, renderer: Renderer, meta: AvatarMeta, config: RendererConfig | None = None) -> Path:
    """Write `renderer` (its config is `config`, else `renderer.config`) and `meta` as the avatar
    bundle in `root`.

    Other files in `root` (checkpoints, previews, logs) are kept (see `save_bundle`).
    """
    root = Path(root)
    config = config if config is not None else getattr(renderer, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise TypeError(f"{type(renderer).__name__} has no `.config` with to_dict(); pass config=")
    header = {"renderer": {"type": type(config).__name__, "config": config.to_dict()}, **meta.to_json()}
    tensors = {f"renderer.{k}": v for k, v in renderer.state_dict().items()} | meta.to_tensors()
    return save_bundle(root, KIND, SCHEMA_VERSION, header, tensors)


@dataclass
class Avatar:
    """A loaded avatar: the renderer (eval mode, on `device`) and its metadata."""

    renderer: Renderer
    config: RendererConfig
    meta: AvatarMeta
    device: torch.device
    _background: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._background = self.meta.background_tensor().to(self.device)

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    def check_motion(self, motion: Motion) -> None:
        """Raise `InputError` when `motion` cannot drive this avatar."""
        m = self.meta
        if motion.representation != m.representation:
            raise InputError(f"motion uses the {motion.representation!r} representation, the avatar {m.representation!r}")
        if motion.expression.shape[1] != m.expression_dim:
            raise InputError(f"motion expression has {motion.expression.shape[1]} values per frame, "
                             f"the avatar expects {m.expression_dim}")
        if len(motion) == 0:
            raise InputError("motion has no frame")

    def condition(self, expression: torch.Tensor, blink: torch.Tensor, rotation: torch.Tensor,
                  translation: torch.Tensor) -> RenderCondition:
        """A `RenderCondition` for B frames: expression (B, D), blink (B,), rotation (B, 3, 3),
        translation (B, 3) metres (any float tensors or arrays; moved to the avatar's device)."""
        def t(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32).to(self.device)

        b = len(expression)
        m = self.meta
        return RenderCondition(
            expression=t(expression), blink=t(blink), rotation=t(rotation), translation=t(translation),
            ref_rotation=t(m.ref_rotation), ref_translation=t(m.ref_translation), K=t(m.K),
            background=self._background.unsqueeze(0).expand(b, -1, -1, -1),
        )

    @torch.inference_mode()
    def render(self, motion: Motion, start: int = 0, stop: int | None = None) -> RenderOutput:
        """Render frames [start, stop) of `motion`."""
        sl = slice(start, len(motion) if stop is None else stop)
        cond = self.condition(motion.expression[sl], motion.blink[sl], motion.rotation[sl], motion.translation[sl])
        return self.renderer(cond)


def to_uint8_frames(rgb: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return rgb.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def load_avatar(root: str | Path, device: str | torch.device | None = None,
                config_type: type | None = None) -> Avatar:
    """Load the avatar bundle in `root` onto `device` (default: CUDA when present, else CPU).

    `config_type` is the renderer config class (default `DBFConfig`); a bundle of another renderer,
    a missing/corrupt file or mismatched weights give a one-line `FormatError`.
    """
    from erlnet.device import default_device

    root = Path(root)
    try:
        dev = torch.device(device) if device is not None else default_device()
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    header, tensors, _ = load_bundle(root, KIND, SCHEMA_VERSION, device="cpu")
    if config_type is None:
        from erlnet.render.dbf import DBFConfig

        config_type = DBFConfig
    rinfo = header.get("renderer")
    if not isinstance(rinfo, dict) or "config" not in rinfo:
        raise FormatError(f"{root}: avatar config has no renderer section")
    if rinfo.get("type") != config_type.__name__:
        raise FormatError(f"{root}: avatar renderer is {rinfo.get('type')!r}, this code loads {config_type.__name__!r}")
    meta = AvatarMeta.from_parts(header, tensors, root)
    try:
        config = config_type.from_dict(rinfo["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{root}: renderer config is invalid ({exc})") from None
    renderer = config.setup(meta.expression_dim, meta.image_size)
    weights = {k[len("renderer."):]: v for k, v in tensors.items() if k.startswith("renderer.")}
    try:
        renderer.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise FormatError(f"{root}: weights do not match the renderer config ({first[1].strip() if len(first) > 1 else first[0]})") from None
    renderer.to(dev).eval()
    return Avatar(renderer=renderer, config=config, meta=meta, device=dev)
