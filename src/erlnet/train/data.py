"""Training data of an avatar: frames of one preprocessed subject, loaded lazily from disk.

A sample is one frame: its motion (expression, blink, head pose), the intrinsics at the training
size, the target image and its head / torso / mouth masks. The video is never held in memory: each
item reads one JPEG and one PNG (an optional small LRU cache keeps recently used, already resized
frames).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from erlnet.errors import InputError
from erlnet.face import topology
from erlnet.io.subject import Subject
from erlnet.render.avatar import resize_rgb, scaled_intrinsics
from erlnet.render.base import RenderCondition


@dataclass
class DataConfig:
    """What the avatar trains on."""

    image_size: int = 0  # output resolution (pixels): frames, masks and K are scaled to it; 0 = the subject's size
    batch_size: int = 1  # frames per optimisation step (per device)
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    cache_frames: int = 64  # LRU cache of decoded, resized frames per worker (0 = off)
    train_split: str = "train"  # subject split the avatar learns from
    val_split: str = "val"  # held-out split (later in time) for validation; falls back to "test" when empty
    val_frames: int = 8  # held-out frames per validation run, evenly spaced over the split
    mouth_margin: float = 0.25  # mouth mask = lip hull grown by this fraction of the mouth width


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(h, w) uint8 labels (0 bg, 1 torso, 2 head) -> (size, size) uint8 labels.

    Shrinking takes the majority label of each output pixel's footprint (area-averaged one-hot
    planes), which keeps thin structures better than nearest-neighbour picking.
    """
    if labels.shape[0] == size and labels.shape[1] == size:
        return labels
    onehot = np.stack([labels == k for k in (0, 1, 2)], axis=-1).astype(np.float32)
    interp = cv2.INTER_AREA if labels.shape[0] > size else cv2.INTER_LINEAR
    return np.argmax(cv2.resize(onehot, (size, size), interpolation=interp), axis=-1).astype(np.uint8)


def mouth_mask(landmarks: np.ndarray, size: int, scale: float, margin: float) -> np.ndarray:
    """(size, size) float32 mask of the mouth: the convex hull of the outer lip contour, dilated by
    `margin` x mouth width. landmarks (478, 3) in pixels of the subject crop; `scale` = size / crop."""
    out = np.zeros((size, size), np.uint8)
    pts = landmarks[topology.LIPS_OUTER, :2].astype(np.float64) * scale
    if not np.isfinite(pts).all():
        return out.astype(np.float32)
    cv2.fillConvexPoly(out, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    width = float(np.linalg.norm(pts[0] - pts[10]))  # outer corners 61 and 291
    r = int(round(margin * width))
    if r > 0:
        out = cv2.dilate(out, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return out.astype(np.float32)


class SubjectFrames(Dataset):
    """Frames `indices` of a subject at `image_size`; items are dicts of tensors:

    index () int64; expression (D,); blink (); rotation (3, 3); translation (3,) metres; K (3, 3) at
    image size; rgb (3, S, S) in [0, 1]; labels (S, S) int64 (0 background, 1 torso, 2 head);
    mouth (1, S, S) in {0, 1}.
    """

    def __init__(self, subject: Subject, indices: np.ndarray, image_size: int, cache_frames: int = 0,
                 mouth_margin: float = 0.25) -> None:
        if image_size < 8 or image_size % 2:
            raise InputError(f"image_size must be an even number >= 8, got {image_size}")
        self.subject = subject
        self.indices = np.asarray(indices, dtype=np.int64)
        self.image_size = image_size
        self.cache_frames = cache_frames
        self.mouth_margin = mouth_margin
        tr = subject.tracking()
        n = len(subject)
        for key in ("expression", "blink", "rotation", "translation", "landmarks"):
            if key not in tr or len(tr[key]) != n:
                raise InputError(f"{subject.root}: tracking.npz lacks per-frame {key!r}; preprocess again")
        self._tracking = {k: tr[k] for k in ("expression", "blink", "rotation", "translation", "landmarks")}
        self.scale = image_size / subject.manifest.size
        self.K = torch.from_numpy(scaled_intrinsics(subject.manifest.K, subject.manifest.size, image_size))
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.indices)

    def _pixels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized frame (S, S, 3) uint8 and labels (S, S) uint8 of frame i (cached)."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        rgb = resize_rgb(self.subject.frame(i), self.image_size)
        labels = resize_labels(self.subject.mask(i), self.image_size)
        if self.cache_frames > 0:
            self._cache[i] = (rgb, labels)
            if len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return rgb, labels

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i = int(self.indices[k])
        tr = self._tracking
        rgb, labels = self._pixels(i)
        mouth = mouth_mask(tr["landmarks"][i], self.image_size, self.scale, self.mouth_margin)
        return {
            "index": torch.tensor(i, dtype=torch.int64),
            "expression": torch.from_numpy(np.asarray(tr["expression"][i], np.float32)),
            "blink": torch.tensor(float(tr["blink"][i]), dtype=torch.float32),
            "rotation": torch.from_numpy(np.asarray(tr["rotation"][i], np.float32)),
            "translation": torch.from_numpy(np.asarray(tr["translation"][i], np.float32)),
            "K": self.K.clone(),
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "mouth": torch.from_numpy(mouth)[None],
        }


def batch_condition(batch: dict[str, torch.Tensor], background: torch.Tensor, ref_rotation: torch.Tensor,
                    ref_translation: torch.Tensor) -> RenderCondition:
    """A collated batch + the subject's background (3, S, S) and reference pose -> `RenderCondition`."""
    b = batch["expression"].shape[0]
    return RenderCondition(
        expression=batch["expression"],
        blink=batch["blink"],
        rotation=batch["rotation"],
        translation=batch["translation"],
        ref_rotation=ref_rotation,
        ref_translation=ref_translation,
        K=batch["K"][0],
        background=background.unsqueeze(0).expand(b, -1, -1, -1),
    )


def evenly_spaced(indices: np.ndarray, n: int) -> np.ndarray:
    """At most n entries of `indices`, evenly spaced (first and last included)."""
    if n <= 0 or len(indices) <= n:
        return indices
    pick = np.round(np.linspace(0, len(indices) - 1, n)).astype(np.int64)
    return indices[np.unique(pick)]


class SubjectDataModule(L.LightningDataModule):
    """Random training frames and a fixed set of held-out validation frames of one subject."""

    def __init__(self, subject_dir: str | Path, config: DataConfig | None = None) -> None:
        super().__init__()
        self.subject_dir = Path(subject_dir)
        self.config = config or DataConfig()
        self.subject = Subject(self.subject_dir)  # checks the subject is complete before training starts
        # 0 = the subject's own size: training above it only upsamples the frames (4x the cost per step at 2x)
        self.image_size = self.config.image_size or int(self.subject.manifest.size)
        self.train_set = self._dataset(self.subject.split_indices(self.config.train_split))
        if len(self.train_set) == 0:
            raise InputError(f"{self.subject_dir}: split {self.config.train_split!r} holds no frame to train on")
        self.val_set = self._dataset(evenly_spaced(self._val_indices(), self.config.val_frames))

    def _val_indices(self) -> np.ndarray:
        for name in (self.config.val_split, "test"):
            if name in self.subject.manifest.split and len(idx := self.subject.split_indices(name)):
                return idx
        return np.zeros(0, np.int64)

    def _dataset(self, indices: np.ndarray) -> SubjectFrames:
        c = self.config
        return SubjectFrames(self.subject, indices, self.image_size, c.cache_frames, c.mouth_margin)

    def train_dataloader(self) -> DataLoader:
        c = self.config
        return DataLoader(self.train_set, batch_size=c.batch_size, shuffle=True,
                          drop_last=len(self.train_set) >= c.batch_size, num_workers=c.num_workers,
                          persistent_workers=c.num_workers > 0)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.val_set) == 0:
            return []
        return DataLoader(self.val_set, batch_size=self.config.batch_size, shuffle=False,
                          num_workers=self.config.num_workers)
