"""`erlnet animate`: speech + a style clip -> a `Motion` (expression, blink, head pose per video frame).

    motion = animate("speech.wav", "style.mp4", "motion-model/", subject="subject/")

The motion-model bundle (kind "motion-model", written by `erlnet train-motion`) holds the ADF model,
optionally the no-VQ regressor baseline, and what is needed to feed them: the audio encoder config,
the expression representation and the frame rate. A style clip is either a video (preprocessed here
in tracking-only mode) or a preprocessed subject directory.

Retargeting onto a subject: expressions are displacements from a neutral face in units of its eye
distance, so the generated vectors apply to the subject's own neutral face unchanged; the head pose
is generated relative to the style clip's mean pose and re-attached to the subject's mean pose
(R = R_subject dR, t = t_subject + dt).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from erlnet.audio.base import AudioEncoderConfig, config_from_dict
from erlnet.errors import FormatError, InputError
from erlnet.eval.motion import mean_rotation
from erlnet.face.representation import LandmarkRepresentationConfig
from erlnet.io.audio import load_audio
from erlnet.io.bundle import CONFIG, WEIGHTS, load_bundle, save_bundle
from erlnet.io.subject import Subject
from erlnet.motion.adf import ADFModel, ExpressionRegressor
from erlnet.motion.config import emotion_index
from erlnet.types import Motion

log = logging.getLogger(__name__)

KIND = "motion-model"
SCHEMA_VERSION = 1
AUDIO_SR = 16000
SILENCE_DB = -60.0  # speech whose loudest 40 ms frame is below this (dB re full scale) counts as silent


# ---------------------------------------------------------------- the bundle
@dataclass
class MotionModel:
    """A loaded motion-model bundle (models in eval mode on `device`)."""

    model: ADFModel
    regressor: ExpressionRegressor | None
    audio: AudioEncoderConfig
    representation: LandmarkRepresentationConfig
    fps: float
    meta: dict[str, Any]
    root: Path

    @property
    def stages(self) -> dict[str, int]:
        """Optimisation steps done per training phase (stage1, stage2, regressor)."""
        return {k: int(v) for k, v in self.meta.get("stages", {}).items()}


def save_motion_model(
    root: str | Path, model: ADFModel, regressor: ExpressionRegressor | None, audio: AudioEncoderConfig,
    representation: LandmarkRepresentationConfig, meta: dict[str, Any],
) -> Path:
    """Write the bundle into `root`, keeping other files there (checkpoints, logs): it is staged with
    `save_bundle` and its two files are moved into place by atomic renames, weights first."""
    from dataclasses import asdict

    root = Path(root)
    config = {
        "model": model.spec(),
        "regressor": None if regressor is None else regressor.spec(),
        "audio_encoder": audio.to_dict(),
        "audio_cache_key": audio.setup().cache_key,
        "representation": {"name": representation.setup().name, "config": asdict(representation)},
        "fps": float(model.config.fps),
    }
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if regressor is not None:
        tensors |= {f"regressor.{k}": v for k, v in regressor.state_dict().items()}
    root.mkdir(parents=True, exist_ok=True)
    staging = save_bundle(root / ".export", KIND, SCHEMA_VERSION, config, tensors, meta)
    os.replace(staging / WEIGHTS, root / WEIGHTS)
    os.replace(staging / CONFIG, root / CONFIG)
    shutil.rmtree(staging, ignore_errors=True)
    return root


def _sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_motion_model(root: str | Path, device: str | torch.device = "cpu") -> MotionModel:
    """Read a motion-model bundle; FormatError for a missing, corrupt or foreign one."""
    root = Path(root)
    config, tensors, meta = load_bundle(root, KIND, SCHEMA_VERSION, device="cpu")
    try:
        model = ADFModel.from_spec(config["model"])
        model.load_state_dict(_sub_state(tensors, "model."))
        regressor = None
        if config.get("regressor") is not None:
            regressor = ExpressionRegressor.from_spec(config["regressor"])
            regressor.load_state_dict(_sub_state(tensors, "regressor."))
        audio = config_from_dict(config["audio_encoder"])
        representation = LandmarkRepresentationConfig(**config["representation"]["config"])
        fps = float(config["fps"])
    except (KeyError, TypeError, RuntimeError, InputError) as exc:
        raise FormatError(f"{root}: motion model does not match its config ({exc})") from None
    model.to(device).eval()
    if regressor is not None:
        regressor.to(device).eval()
    return MotionModel(model, regressor, audio, representation, fps, meta, root)


# ---------------------------------------------------------------- inputs
def load_speech(path: str | Path, fps: float = 25.0) -> np.ndarray:
    """Speech file -> (S,) float32 at 16 kHz, checked with `check_speech`."""
    wav = load_audio(path, sr=AUDIO_SR)
    if wav is None:
        raise InputError(f"{path}: has no audio stream")
    return check_speech(wav, fps, str(path))


def check_speech(wav: np.ndarray, fps: float = 25.0, name: str = "audio") -> np.ndarray:
    """(S,) float 16 kHz samples -> the same as float32; InputError when they are not mono floats, are
    shorter than one video frame, or are silent (no 40 ms frame above -60 dB)."""
    wav = np.asarray(wav)
    if wav.ndim != 1 or not np.issubdtype(wav.dtype, np.floating):
        raise InputError(f"{name}: expected mono float samples (S,), got {wav.dtype} {wav.shape}")
    if wav.size < AUDIO_SR / fps:
        raise InputError(f"{name}: audio is {1000 * wav.size / AUDIO_SR:.1f} ms long, shorter than one video "
                         f"frame ({1000 / fps:.0f} ms)")
    if not np.isfinite(wav).all():
        raise InputError(f"{name}: audio holds NaN or infinite samples")
    from erlnet.motion.corpus import frame_envelope

    n = int(np.floor(wav.size * fps / AUDIO_SR + 1e-6))
    loudest = float(frame_envelope(wav, AUDIO_SR, n, fps).max())
    if loudest < SILENCE_DB:
        raise InputError(f"{name}: audio is silent (loudest frame {loudest:.0f} dB); give a speech recording")
    return wav.astype(np.float32, copy=False)


def speech_features(wav: np.ndarray, audio: AudioEncoderConfig, fps: float) -> np.ndarray:
    """Audio (S,) 16 kHz -> (T, A) features, one row per 1/fps s of audio (T = floor(duration * fps)).

    InputError when the encoder's frame rate is not the motion model's.
    """
    enc = audio.setup()
    if abs(enc.fps - fps) > 1e-6:
        raise InputError(f"audio features are at {enc.fps:g} rows/s but the motion model runs at {fps:g} frames/s")
    return enc.encode(wav, AUDIO_SR)


@dataclass
class StyleClip:
    """A style reference: expression (S, D) relative to `neutral` (478, 3) m, rotation (S, 3, 3),
    translation (S, 3) m, at `fps`."""

    expression: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    neutral: np.ndarray
    fps: float
    source: str


def _is_subject(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


@contextmanager
def _tracked(path: Path, size: int, fps: float, representation: LandmarkRepresentationConfig,
             cache_dir: Path | None) -> Iterator[Subject]:
    """A subject for `path`: the directory itself, or a tracking-only preprocessing of the video."""
    if _is_subject(path):
        yield Subject(path)
        return
    if not path.exists():
        raise InputError(f"{path}: no such style clip")
    from erlnet.preprocess.pipeline import PreprocessConfig

    cfg = PreprocessConfig(size=size, fps=fps, tracking_only=True, representation=representation)
    with _quiet_about_audio():
        yield from _track_video(path, cfg, cache_dir)


class _NoAudioFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "has no audio track" not in record.getMessage()


@contextmanager
def _quiet_about_audio() -> Iterator[None]:
    """A style clip needs no speech: drop the preprocessing warning about a missing audio track."""
    logger = logging.getLogger("erlnet.preprocess.pipeline")
    filt = _NoAudioFilter()
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


def _track_video(path: Path, cfg: Any, cache_dir: Path | None) -> Iterator[Subject]:
    from erlnet.preprocess.pipeline import run_preprocess

    if cache_dir is not None:
        run_preprocess(path, cache_dir, cfg, show_progress=False)
        yield Subject(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="erlnet-style-") as tmp:
        run_preprocess(path, Path(tmp) / "s", cfg, show_progress=False)
        yield Subject(Path(tmp) / "s")


def load_style(
    path: str | Path, fps: float, representation: LandmarkRepresentationConfig, size: int = 256,
    cache_dir: Path | None = None, neutral_from: str | Path | None = None,
) -> StyleClip:
    """Track a style clip (video or subject directory). `neutral_from`: a calm clip (or subject) of
    the same person whose neutral face the expressions are re-expressed against; by default the
    clip's own calm frames define it (an expression held through the whole clip then reads as neutral)."""
    path = Path(path)
    with _tracked(path, size, fps, representation, cache_dir) as subj:
        if abs(subj.fps - fps) > 1e-6:
            raise InputError(f"{path}: style clip is at {subj.fps:g} frames/s but the motion model runs at {fps:g}")
        tr = subj.tracking()
        expr, neutral = tr["expression"], tr["neutral"]
        rot, trans = tr["rotation"], tr["translation"]
    rep = representation.setup()
    if expr.shape[1] != rep.dim:
        raise InputError(f"{path}: style expressions have {expr.shape[1]} dims, the motion model {rep.dim} "
                         "(preprocessed with another representation)")
    if neutral_from is not None:
        from erlnet.motion.corpus import rereference

        with _tracked(Path(neutral_from), size, fps, representation, None) as ref:
            target = ref.tracking()["neutral"]
        expr = rereference(expr, neutral, target, rep)
        neutral = target
    return StyleClip(expr.astype(np.float32), rot.astype(np.float32), trans.astype(np.float32),
                     neutral.astype(np.float32), fps, str(path))


def mean_pose(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference pose of a track: chordal mean rotation (3, 3), mean translation (3,) metres."""
    return mean_rotation(rotation), np.asarray(translation, np.float64).mean(axis=0)


def retarget_pose(
    rotation: np.ndarray, translation: np.ndarray, source_ref: tuple[np.ndarray, np.ndarray],
    target_ref: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Move a pose track from one reference pose to another: R' = R_tgt R_src^T R, t' = t_tgt + (t - t_src).

    rotation (T, 3, 3), translation (T, 3) -> float32 arrays of the same shapes.
    """
    r_src, t_src = (np.asarray(x, np.float64) for x in source_ref)
    r_tgt, t_tgt = (np.asarray(x, np.float64) for x in target_ref)
    rel = np.swapaxes(r_src, -1, -2) @ np.asarray(rotation, np.float64)  # dR in the head frame
    return (r_tgt @ rel).astype(np.float32), (t_tgt + np.asarray(translation, np.float64) - t_src).astype(np.float32)


def fit_track(x: np.ndarray, n: int) -> np.ndarray:
    """A track (S, ...) stretched to n frames by playing it forwards and backwards (no jumps)."""
    if len(x) >= n:
        return x[:n]
    bounce = np.concatenate([x, x[-2:0:-1]]) if len(x) > 2 else x
    reps = int(np.ceil(n / len(bounce)))
    return np.concatenate([bounce] * reps)[:n]


# ---------------------------------------------------------------- animate
@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch CPU threads (0 = leave as is), restoring the count after.

    The motion model is small and sequential (token by token): one thread is fastest, and extra
    threads only spin when the CPU is shared.
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class AnimateConfig:
    """Settings of `erlnet animate`."""

    emotion: str | None = None  # emotion label (neutral, angry, contempt, disgusted, fear, happy, sad, surprised)
    pose: str = "generated"  # head pose: "generated", "static" or "from:CLIP" (a video or subject directory)
    seed: int = 0  # seed of the code sampling (same seed -> same motion)
    expression_temperature: float | None = None  # override the model's expression sampling temperature (0 = greedy)
    pose_temperature: float | None = None  # override the model's pose sampling temperature (0 = greedy)
    style_size: int = 256  # working crop when a style video is tracked, pixels
    style_neutral: Path | None = None  # calm clip of the style speaker (see `load_style`)
    device: str = "cpu"  # torch device of the model
    cpu_threads: int = 1  # torch CPU threads while generating (0 = torch's default)


def _pose_source(spec: str) -> tuple[str, Path | None]:
    if spec in ("generated", "static"):
        return spec, None
    if spec.startswith("from:") and len(spec) > 5:
        return "from", Path(spec[5:])
    raise InputError(f"--pose must be 'generated', 'static' or 'from:CLIP', got {spec!r}")


def animate(
    audio: str | Path | np.ndarray, style: str | Path | StyleClip, model: str | Path | MotionModel,
    subject: str | Path | None = None, config: AnimateConfig | None = None, style_cache: Path | None = None,
) -> Motion:
    """Motion for speech `audio` (a file, or 16 kHz (S,) float32 samples) in the manner of `style`.

    One frame per 1/fps s of audio. With `subject`, the head pose is re-attached to the subject's mean
    pose and the expression dims are checked against the subject's; otherwise the pose stays in the
    style clip's camera.
    """
    cfg = config or AnimateConfig()
    mm = model if isinstance(model, MotionModel) else load_motion_model(model, cfg.device)
    if mm.stages.get("stage2", 0) <= 0:
        raise InputError(f"{mm.root}: the motion model has not been trained through stage 2; "
                         "finish `erlnet train-motion` first")
    mode, pose_clip = _pose_source(cfg.pose)
    emotion_index(cfg.emotion)  # a misspelt emotion fails before any tracking
    wav = check_speech(audio, mm.fps) if isinstance(audio, np.ndarray) else load_speech(audio, mm.fps)
    feats = speech_features(wav, mm.audio, mm.fps)
    st = style if isinstance(style, StyleClip) else load_style(
        style, mm.fps, mm.representation, cfg.style_size, style_cache, cfg.style_neutral)
    with cpu_threads(cfg.cpu_threads):
        out = mm.model.generate(feats, st.expression, st.rotation, st.translation, emotion=cfg.emotion,
                                pose_mode="static" if mode == "static" else "generated", seed=cfg.seed,
                                expression_temperature=cfg.expression_temperature,
                                pose_temperature=cfg.pose_temperature)
    n = len(feats)
    src_ref = mean_pose(st.rotation, st.translation)
    rotation, translation = out["rotation"], out["translation"]
    if mode == "from":
        other = load_style(pose_clip, mm.fps, mm.representation, cfg.style_size)
        rotation, translation = retarget_pose(fit_track(other.rotation, n), fit_track(other.translation, n),
                                              mean_pose(other.rotation, other.translation), src_ref)
    if subject is not None:
        subj = Subject(subject)
        tr = subj.tracking()
        if tr["expression"].shape[1] != out["expression"].shape[1]:
            raise InputError(f"{subject}: subject expressions have {tr['expression'].shape[1]} dims, the motion "
                             f"model {out['expression'].shape[1]} (another representation)")
        if abs(subj.fps - mm.fps) > 1e-6:
            raise InputError(f"{subject}: subject is at {subj.fps:g} frames/s, the motion model at {mm.fps:g}")
        valid = tr["valid"].astype(bool) if "valid" in tr else np.ones(len(tr["rotation"]), bool)
        target_ref = mean_pose(tr["rotation"][valid], tr["translation"][valid])
        rotation, translation = retarget_pose(rotation, translation, src_ref, target_ref)
    return Motion(expression=out["expression"], blink=out["blink"], rotation=np.asarray(rotation, np.float32),
                  translation=np.asarray(translation, np.float32), fps=mm.fps,
                  representation=mm.representation.setup().name)
