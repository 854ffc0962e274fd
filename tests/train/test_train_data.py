"""The avatar training data: lazy frame loading, resizing with matching intrinsics, masks, time split."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from erlnet.errors import InputError
from erlnet.face import topology
from erlnet.io.subject import Subject
from erlnet.train.data import DataConfig, SubjectDataModule, SubjectFrames


def test_items_are_resized_with_matching_intrinsics_and_masks(tiny_subject: Path) -> None:
    s = Subject(tiny_subject)
    ds = SubjectFrames(s, np.arange(4), 64)
    item = ds[2]
    assert item["rgb"].shape == (3, 64, 64) and item["rgb"].dtype == torch.float32
    assert 0.0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1.0
    want = cv2.resize(s.frame(2), (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    assert np.abs(item["rgb"].permute(1, 2, 0).numpy() - want).max() < 1e-6
    # K of the 128 px crop scaled by 1/2: same field of view, principal point still the centre
    K = item["K"].numpy()
    assert K[0, 0] == pytest.approx(s.manifest.K[0, 0] / 2) and K[0, 2] == pytest.approx(32.0)
    # a tracked landmark projects to the same relative image position at both sizes
    tr = s.tracking()
    x_cam = tr["rotation"][2] @ tr["canonical"][1] + tr["translation"][2]  # nose tip, metres
    p_small = (K @ x_cam)[:2] / x_cam[2]
    p_full = (s.manifest.K @ x_cam)[:2] / x_cam[2]
    assert np.allclose(p_small, p_full / 2, atol=1e-3)
    labels = item["labels"].numpy()
    assert labels.shape == (64, 64) and set(np.unique(labels)) == {0, 1, 2}
    rows = np.nonzero(labels == 2)[0].mean(), np.nonzero(labels == 1)[0].mean()
    assert rows[0] < rows[1]  # head above torso
    # majority-vote shrinking agrees with the full-size labels almost everywhere
    full = s.mask(2)
    assert (labels == full[1::2, 1::2]).mean() > 0.95
    assert item["expression"].shape == (tr["expression"].shape[1],) and item["rotation"].shape == (3, 3)


def test_frames_are_read_lazily_with_a_bounded_cache(tiny_subject: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Subject(tiny_subject)
    reads: list[int] = []
    real = Subject.frame
    monkeypatch.setattr(Subject, "frame", lambda self, i: reads.append(i) or real(self, i))
    ds = SubjectFrames(s, np.arange(10), 64, cache_frames=2)
    assert reads == []  # nothing decoded up front
    for k in (0, 1, 0, 2, 1):
        ds[k]
    assert reads == [0, 1, 2, 1]  # 0 hit; 2 evicted the least recent (1), which is read again
    assert len(ds._cache) == 2
    uncached = SubjectFrames(s, np.arange(10), 64, cache_frames=0)
    uncached[3], uncached[3]
    assert reads[-2:] == [3, 3] and len(uncached._cache) == 0


def test_mouth_mask_covers_the_lips_only(tiny_subject: Path) -> None:
    s = Subject(tiny_subject)
    item = SubjectFrames(s, np.arange(2), 64)[0]
    mouth = item["mouth"][0].numpy()
    lips = np.round(s.tracking()["landmarks"][0][topology.LIPS_OUTER, :2] / 2).astype(int)
    assert mouth[lips[:, 1].clip(0, 63), lips[:, 0].clip(0, 63)].all()
    assert 0 < mouth.mean() < 0.06
    assert (mouth * (item["labels"].numpy() == 2)).sum() > 0.9 * mouth.sum()  # inside the head


def test_datamodule_holds_out_later_frames(tiny_subject: Path) -> None:
    dm = SubjectDataModule(tiny_subject, DataConfig(image_size=64, batch_size=3, val_frames=2))
    train_idx, val_idx = dm.train_set.indices, dm.val_set.indices
    assert len(val_idx) == 2 and val_idx.min() > train_idx.max()
    batch = next(iter(dm.train_dataloader()))
    assert batch["rgb"].shape == (3, 3, 64, 64) and batch["labels"].shape == (3, 64, 64)
    assert batch["K"].shape == (3, 3, 3)
    seen = {int(i) for b in dm.train_dataloader() for i in b["index"]}
    assert seen <= set(train_idx.tolist()) and len(seen) >= len(train_idx) - 2  # shuffled, drop_last


def test_bad_training_size_is_refused(tiny_subject: Path) -> None:
    with pytest.raises(InputError, match="even number"):
        SubjectFrames(Subject(tiny_subject), np.arange(3), 63)
