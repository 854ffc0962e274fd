"""`erlnet preprocess`: a real talking-head video -> a subject directory (see `erlnet.io.subject`).

The pipeline is a short list of cached steps. Each step has parameters and dependencies; its cache
key hashes both (and the source file), so a rerun skips finished steps and a changed parameter
redoes only the steps that depend on it. Frames are streamed: the video is decoded twice (tracking,
then crops and masks) and never held in memory.

    track     decode at 25 fps, MediaPipe face mesh               -> tracking_raw.npz
    motion    stable crop, gap filling, smoothing, head pose,
              canonical/neutral face, expression, blink            -> tracking.npz
    frames    crops, head/torso/background masks, background plate -> frames/, masks/, background.png
    audio     16 kHz mono track                                    -> audio.wav
    features  per-frame audio features (one file per encoder)      -> audio/<cache_key>.npy
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from erlnet.audio.base import AudioEncoderConfig
from erlnet.audio.melformant import MelFormantConfig
from erlnet.errors import ErlnetError, InputError
from erlnet.face import topology
from erlnet.face.blink import blink_signal, eye_aspect_ratio
from erlnet.face.pose import default_intrinsics, fit_canonical, solve_poses, to_canonical
from erlnet.face.representation import LandmarkRepresentationConfig, estimate_neutral
from erlnet.face.smoothing import SmoothingConfig, smooth_landmarks
from erlnet.face.tracking import FaceTracker, TrackerConfig
from erlnet.io.audio import load_audio, save_wav
from erlnet.io.subject import (
    Manifest,
    StepRecord,
    atomic_write_text,
    load_npz,
    params_hash,
    save_npz,
    staged_dir,
)
from erlnet.io.video import VideoInfo, file_sha256, iter_frames, probe
from erlnet.preprocess.background import BackgroundPlate
from erlnet.preprocess.masks import MaskConfig, PersonSegmenter, label_map
from erlnet.progress import progress

log = logging.getLogger(__name__)

AUDIO_SR = 16000


@dataclass
class PreprocessConfig:
    """Settings of `erlnet preprocess` (each nested config belongs to one step)."""

    size: int = 512  # side of the square working crop, pixels
    fps: float = 25.0  # frames per second after resampling
    crop_scale: float = 2.6  # crop side / face height (forehead to chin): head and shoulders
    face_center: float = 0.42  # where the face centre sits in the crop, from the top (0..1)
    jpeg_quality: int = 95  # quality of the stored frames
    max_missing: float = 0.5  # refuse when more than this fraction of frames has no face
    max_multi_face: float = 0.3  # refuse when several faces compete in more than this fraction
    split: tuple[float, float] = (0.8, 0.1)  # train and val fractions by time; the rest is test
    tracking_only: bool = False  # skip frames, masks and background (corpus building for the motion model)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    representation: LandmarkRepresentationConfig = field(default_factory=LandmarkRepresentationConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    audio: AudioEncoderConfig = field(default_factory=MelFormantConfig)


@dataclass
class StepResult:
    """What `run_preprocess` reports per step."""

    name: str
    skipped: bool
    seconds: float
    info: dict[str, Any]


@dataclass
class _Step:
    name: str
    deps: tuple[str, ...]
    params: Callable[[PreprocessConfig], dict[str, Any]]
    run: Callable[[_Context], dict[str, Any]]
    outputs: Callable[[_Context], list[Path]]
    enabled: Callable[[PreprocessConfig], bool] = lambda cfg: True


@dataclass
class _Context:
    video: Path
    info: VideoInfo
    root: Path
    config: PreprocessConfig
    manifest: Manifest
    show_progress: bool


def tool_versions() -> dict[str, str]:
    """Versions of the tools whose output ends up in a subject."""
    out = {}
    for name in ("erlnet", "mediapipe", "av", "numpy", "opencv-contrib-python", "praat-parselmouth"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


# ---------------------------------------------------------------- step: track
def _track(ctx: _Context) -> dict[str, Any]:
    cfg = ctx.config
    n_est = ctx.info.n_frames_at(cfg.fps) or None
    lms, valid, n_faces, counted = [], [], [], []
    with FaceTracker(cfg.tracker) as tracker:
        for frame in progress(iter_frames(ctx.video, cfg.fps), total=n_est, desc="track", enabled=ctx.show_progress):
            tr = tracker.process(frame)
            lms.append(tr.landmarks if tr.landmarks is not None else np.full((478, 3), np.nan, np.float32))
            valid.append(tr.landmarks is not None)
            n_faces.append(tr.n_faces)
            counted.append(tr.counted)
    valid_a = np.asarray(valid, bool)
    faces_a = np.asarray(n_faces, np.int16)
    n = len(valid_a)
    tracked = float(valid_a.mean())
    if 1.0 - tracked > cfg.max_missing:
        raise InputError(
            f"{ctx.video}: no face found in {n - int(valid_a.sum())} of {n} frames; "
            "erlnet needs a video of one person facing the camera"
        )
    counted_a = np.asarray(counted, bool)
    counted_a = counted_a if counted_a.any() else np.ones_like(counted_a)  # counter off: the mesh's counts
    multi = float((faces_a[counted_a] > 1).mean())
    if multi > cfg.max_multi_face:
        raise InputError(
            f"{ctx.video}: several faces compete in {multi:.0%} of frames; crop the video to one person"
        )
    save_npz(ctx.root / "tracking_raw.npz", landmarks=np.stack(lms), valid=valid_a, n_faces=faces_a)
    missing = _ranges(~valid_a)
    if missing:
        log.warning(
            "no face in %d of %d frames (filled by interpolation): %s",
            int((~valid_a).sum()), n, ", ".join(f"{a}-{b - 1}" for a, b in missing[:10]),
        )
    return {"n_frames": n, "tracked_fraction": tracked, "missing_ranges": missing, "multi_face_fraction": multi}


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """[start, stop) runs where mask is True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


# ---------------------------------------------------------------- step: motion
def crop_box(lms: np.ndarray, valid: np.ndarray, width: int, height: int, cfg: PreprocessConfig) -> dict[str, int]:
    """A square box (source pixels) that holds head and shoulders over the whole clip, fixed in time.

    lms (T, 478, 3) source pixels. Uses medians so a few bad frames do not move the crop.
    """
    good = lms[valid]
    oval = good[:, topology.FACE_OVAL, :2]
    center = np.median(oval.mean(axis=1), axis=0)
    face_h = np.median(np.linalg.norm(good[:, 152, :2] - good[:, 10, :2], axis=1))
    side = int(round(min(cfg.crop_scale * face_h, width, height)))
    side -= side % 2
    x0 = int(round(center[0] - side / 2))
    y0 = int(round(center[1] - cfg.face_center * side))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return {"x0": x0, "y0": y0, "side": side}


def _to_crop(lms: np.ndarray, box: dict[str, int], size: int) -> np.ndarray:
    """Source-pixel landmarks (..., 3) -> working-crop pixels (z scales with x, as tracked)."""
    s = size / box["side"]
    out = lms.astype(np.float64) * s
    out[..., 0] -= box["x0"] * s
    out[..., 1] -= box["y0"] * s
    return out


def _motion(ctx: _Context) -> dict[str, Any]:
    cfg = ctx.config
    raw = load_npz(ctx.root / "tracking_raw.npz")
    valid = raw["valid"]
    box = crop_box(raw["landmarks"], valid, ctx.info.width, ctx.info.height, cfg)
    lms_raw = _to_crop(raw["landmarks"], box, cfg.size)
    lms = smooth_landmarks(lms_raw, valid, cfg.fps, cfg.smoothing)
    K = default_intrinsics(cfg.size)
    canonical = fit_canonical(lms[valid], topology.RIGID)
    poses = solve_poses(lms, canonical, K)
    canon_lms = to_canonical(lms, poses, K)
    neutral = estimate_neutral(canon_lms)
    rep = cfg.representation.setup()
    expression = rep.encode(canon_lms, neutral)
    ear = eye_aspect_ratio(lms)
    save_npz(
        ctx.root / "tracking.npz",
        landmarks=lms.astype(np.float32),
        landmarks_raw=np.nan_to_num(lms_raw, nan=0.0).astype(np.float32),
        valid=valid,
        rotation=poses.R.astype(np.float32),
        translation=poses.t.astype(np.float32),
        scale=poses.scale.astype(np.float32),
        z_offset=poses.z_offset.astype(np.float32),
        canonical=canonical.astype(np.float32),
        canonical_landmarks=canon_lms.astype(np.float32),
        neutral=neutral.astype(np.float32),
        expression=expression.astype(np.float32),
        ear=ear.astype(np.float32),
        blink=blink_signal(ear).astype(np.float32),
        mouth_opening=topology.mouth_opening(lms).astype(np.float32),
        intrinsics=K.astype(np.float32),
    )
    ctx.manifest.crop = box
    ctx.manifest.intrinsics = K.tolist()
    ctx.manifest.n_frames = int(len(lms))
    return {"crop": box, "representation": rep.name, "expression_dim": int(rep.dim)}


# ---------------------------------------------------------------- step: frames
def _frames(ctx: _Context) -> dict[str, Any]:
    cfg = ctx.config
    tr = load_npz(ctx.root / "tracking.npz")
    lms = tr["landmarks"]
    box = ctx.manifest.crop
    x0, y0, side = box["x0"], box["y0"], box["side"]
    n = len(lms)
    plate = BackgroundPlate((cfg.size, cfg.size), n_frames_expected=n)
    interp = cv2.INTER_AREA if side > cfg.size else cv2.INTER_LINEAR
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    head_px = np.zeros(3, np.int64)
    count = 0
    with staged_dir(ctx.root / "frames") as fdir, staged_dir(ctx.root / "masks") as mdir:
        with PersonSegmenter(cfg.masks) as seg, ThreadPoolExecutor(1) as writer:
            pending: deque[Future[None]] = deque()
            frames = iter_frames(ctx.video, cfg.fps)
            for i, frame in enumerate(progress(frames, total=n, desc="frames+masks", enabled=ctx.show_progress)):
                if i >= n:
                    break
                crop = frame[y0 : y0 + side, x0 : x0 + side]
                if side != cfg.size:
                    crop = cv2.resize(crop, (cfg.size, cfg.size), interpolation=interp)
                labels = label_map(seg.person_probability(crop), lms[i], cfg.masks)
                plate.add(crop, labels)
                # Encoding and writing run on the second core (cv2 releases the GIL) while the next
                # frame is decoded and segmented; a bounded queue keeps memory flat.
                pending.append(writer.submit(_write_frame, fdir / f"{i:06d}.jpg", crop, jpeg,
                                             mdir / f"{i:06d}.png", labels, png))
                if len(pending) > 8:
                    pending.popleft().result()
                head_px += np.bincount(labels.ravel(), minlength=3)[:3]
                count += 1
            for fut in pending:
                fut.result()
        if count != n:
            raise InputError(f"{ctx.video}: second decode gave {count} frames, the first gave {n} (unstable stream)")
    bg, holes = plate.result()
    _write_image(ctx.root / "background.png", bg)
    frac = head_px / max(1, head_px.sum())
    return {
        "hole_fraction": float(holes.mean()),
        "label_fraction": {"background": float(frac[0]), "torso": float(frac[1]), "head": float(frac[2])},
    }


def _write_frame(fpath: Path, rgb: np.ndarray, fopts: list[int], mpath: Path, labels: np.ndarray,
                 mopts: list[int]) -> None:
    if not (cv2.imwrite(str(fpath), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), fopts) and cv2.imwrite(str(mpath), labels, mopts)):
        raise ErlnetError(f"{fpath.parent.parent}: could not write frame {fpath.stem} (disk full?)")


def _write_image(path: Path, rgb: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ErlnetError(f"{path}: could not write image")
    tmp.replace(path)


# ---------------------------------------------------------------- steps: audio, features
def _audio(ctx: _Context) -> dict[str, Any]:
    wav = load_audio(ctx.video, sr=AUDIO_SR)
    path = ctx.root / "audio.wav"
    if wav is None or wav.size == 0:
        log.warning("%s has no audio track: the subject will have no audio features", ctx.video)
        path.unlink(missing_ok=True)
        ctx.manifest.has_audio = False
        return {"has_audio": False}
    save_wav(path, wav, AUDIO_SR)
    ctx.manifest.has_audio = True
    return {"has_audio": True, "seconds": float(wav.size / AUDIO_SR)}


def _features(ctx: _Context) -> dict[str, Any]:
    if not ctx.manifest.has_audio:
        return {"has_audio": False}
    encoder = ctx.config.audio.setup()
    wav = load_audio(ctx.root / "audio.wav", sr=AUDIO_SR)
    feats = encoder.encode(wav, AUDIO_SR, n_frames=ctx.manifest.n_frames)
    out = ctx.root / "audio" / f"{encoder.cache_key}.npy"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.npy")
    np.save(tmp, feats.astype(np.float32))
    tmp.replace(out)
    return {"encoder": encoder.cache_key, "feature_dim": int(encoder.feature_dim)}


def _feature_outputs(ctx: _Context) -> list[Path]:
    if not ctx.manifest.has_audio:
        return []
    return [ctx.root / "audio" / f"{ctx.config.audio.setup().cache_key}.npy"]


STEPS: list[_Step] = [
    _Step(
        "track",
        (),
        lambda c: {"fps": c.fps, "tracker": asdict(c.tracker), "max_missing": c.max_missing,
                   "max_multi_face": c.max_multi_face},
        _track,
        lambda ctx: [ctx.root / "tracking_raw.npz"],
    ),
    _Step(
        "motion",
        ("track",),
        lambda c: {"size": c.size, "crop_scale": c.crop_scale, "face_center": c.face_center,
                   "smoothing": asdict(c.smoothing), "representation": asdict(c.representation)},
        _motion,
        lambda ctx: [ctx.root / "tracking.npz"],
    ),
    _Step(
        "frames",
        ("motion",),
        lambda c: {"jpeg_quality": c.jpeg_quality, "masks": asdict(c.masks)},
        _frames,
        lambda ctx: [ctx.root / "frames", ctx.root / "masks", ctx.root / "background.png"],
        enabled=lambda c: not c.tracking_only,
    ),
    _Step("audio", (), lambda c: {"sr": AUDIO_SR}, _audio, lambda ctx: []),
    _Step(
        "features",
        ("audio", "motion"),
        lambda c: {"encoder": asdict(c.audio), "encoder_type": type(c.audio).__name__},
        _features,
        _feature_outputs,
    ),
]


def _split(n: int, fractions: tuple[float, float]) -> dict[str, list[int]]:
    """Contiguous train/val/test ranges by time, so held-out frames are unseen motion."""
    a = int(round(n * fractions[0]))
    b = int(round(n * (fractions[0] + fractions[1])))
    return {"train": [0, a], "val": [a, b], "test": [b, n]}


def _prepare_root(root: Path) -> tuple[Manifest, bool]:
    """Open or create the output directory; returns (manifest, created_now)."""
    mpath = root / "manifest.json"
    if mpath.exists():
        return Manifest.from_json(mpath.read_text(), where=str(mpath)), False
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InputError(f"{root}: exists and is not an erlnet subject; choose an empty or new directory")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    return Manifest(), created


def run_preprocess(
    video: str | Path, out: str | Path, config: PreprocessConfig | None = None, show_progress: bool = True
) -> list[StepResult]:
    """Preprocess `video` into the subject directory `out`, resuming where a previous run stopped.

    Raises `InputError` for bad input; a directory this call created is removed again then, so no
    half-written subject is left behind. Interrupted runs keep their finished steps.
    """
    cfg = config or PreprocessConfig()
    video, root = Path(video), Path(out)
    info = probe(video)  # fails on a bad file before anything is written
    manifest, created = _prepare_root(root)
    try:
        return _run_steps(video, info, root, cfg, manifest, show_progress)
    except ErlnetError:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise


def _run_steps(
    video: Path, info: VideoInfo, root: Path, cfg: PreprocessConfig, manifest: Manifest, show_progress: bool
) -> list[StepResult]:
    source = {"path": str(video.resolve()), "sha256": file_sha256(video), "bytes": video.stat().st_size,
              "width": info.width, "height": info.height, "fps": info.fps, "duration": info.duration,
              "codec": info.codec}
    if manifest.source and manifest.source.get("sha256") != source["sha256"]:
        log.warning("%s was made from another video: every step is redone", root)
    manifest.source, manifest.fps, manifest.size, manifest.tools = source, cfg.fps, cfg.size, tool_versions()
    manifest.complete = False
    mpath = root / "manifest.json"
    atomic_write_text(mpath, manifest.to_json())
    ctx = _Context(video, info, root, cfg, manifest, show_progress)
    keys: dict[str, str] = {}
    results = []
    for step in STEPS:
        if not step.enabled(cfg):
            continue
        params = step.params(cfg)
        key = params_hash({"source": source["sha256"], "params": params, "deps": [keys[d] for d in step.deps]})
        keys[step.name] = key
        rec = manifest.steps.get(step.name)
        if rec is not None and rec.key == key and all(p.exists() for p in step.outputs(ctx)):
            log.info("%s: up to date, skipped", step.name)
            results.append(StepResult(step.name, True, 0.0, rec.info))
            continue
        log.info("%s: running", step.name)
        manifest.steps.pop(step.name, None)
        t0 = time.perf_counter()
        info_out = step.run(ctx)
        dt = time.perf_counter() - t0
        info_out["seconds"] = round(dt, 3)
        manifest.steps[step.name] = StepRecord(key=key, params=params, info=info_out)
        atomic_write_text(mpath, manifest.to_json())
        results.append(StepResult(step.name, False, dt, info_out))
    manifest.split = _split(manifest.n_frames, cfg.split)
    manifest.complete = True
    atomic_write_text(mpath, manifest.to_json())
    return results
