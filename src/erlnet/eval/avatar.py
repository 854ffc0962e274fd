"""`erlnet evaluate`: how well an avatar re-renders the held-out part of its subject.

Protocol: the frames after the train split (val + test) are rendered from their own tracked motion
(expression, blink, head pose) and compared with the real frames, both at the avatar's size:

- PSNR, SSIM: per frame, averaged (dB; 0..1); also inside a mouth box (`metrics.mouth_box`: the
  real frame's tracked outer lips, grown by a quarter of the mouth width), where the mouth's motion is
  a large part of the error instead of a small part of the frame.
- CPBD: no-reference sharpness (`metrics.cpbd`) of the rendered and of the real frames; a renderer
  that blurs scores lower than the truth.
- Neck-band error: mean |error| (0..255) and PSNR in a strip around the chin/neck seam
  (`metrics.neck_band`), where the head and torso branches meet.
- Mouth LMD: the rendered and the real frames are both tracked with MediaPipe (same tracker, same
  size, so tracker bias cancels) and the mouth points compared (pixels at the avatar's size), over the
  frames where a face is found in both. The same tracks give the mouth opening over time and the head
  pose recovered from the pixels (`face.pose.solve_poses` with the subject's canonical shape): the
  head-pose error is the mean angle between the pose seen in the rendered and in the real frames.
- Mouth dynamics (`metrics.opening_dynamics`): the correlation of the rendered and the real mouth
  opening (inner-lip gap / eye distance, tracked as above) over the frames, and their amplitude ratio
  (5-95 percentile range, rendered / real): a mouth that stays half shut scores low here even when
  PSNR, SSIM and mouth LMD look good (a closed mouth is close to the mean shape).
- Training frames: `train_frames` frames spread evenly over the train split are rendered and scored
  the same way (PSNR, SSIM, mouth box, mouth dynamics; keys `train_...`): whether the avatar
  reproduces even the frames it was trained on, apart from how it generalises.
- Render speed: frames per second of the renderer alone (no metric, no encoding).
- LPIPS, FID, SyncNet (`erlnet.eval.learned`) need pretrained networks; erlnet downloads nothing, so
  each is computed only when its weights are given (`lpips_weights` + `lpips_vgg_weights`,
  `fid_weights`, `syncnet_weights`) and listed as "not computed (no weights)" otherwise:
  LPIPS (VGG, v0.1) per frame, rendered vs real, averaged; FID of the rendered frames against the
  real ones (over a few hundred frames FID is biased high, by the 2048-d covariance estimated from
  few samples: compare avatars scored on the same frames, not with published numbers); LSE-D,
  LSE-C and the audio-video offset of SyncNet, as in the Wav2Lip evaluation, on the rendered and,
  for reference, on the real frames with the held-out audio (needs stride 1, audio and 25 frames/s;
  the face crop comes from the subject's tracked landmarks).

The side-by-side video (truth | generated, with the held-out audio) is written while rendering, so
memory stays bounded for any number of frames.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from erlnet.errors import InputError
from erlnet.eval import metrics as M
from erlnet.face import topology as tp
from erlnet.io.subject import Subject
from erlnet.types import Motion

if TYPE_CHECKING:
    from erlnet.eval.learned import LearnedMetrics

AUDIO_SR = 16000
SIDE_BY_SIDE = "side_by_side.mp4"
N_SAMPLES = 6  # frames kept as images for the report's error strip


@dataclass
class EvaluateConfig:
    """Settings of `erlnet evaluate`."""

    max_frames: int = 0  # evaluate at most this many held-out frames (0 = all)
    stride: int = 1  # evaluate every N-th held-out frame (1 = all; the side-by-side video then skips frames too)
    batch_size: int = 4  # frames rendered at once
    device: str = "cpu"  # torch device of the renderer and the LPIPS/FID/SyncNet networks ("cpu", "cuda", "cuda:1", ...)
    render_threads: int = 0  # torch CPU threads while rendering (0 = torch's default)
    track: bool = True  # track real and rendered frames with MediaPipe (mouth LMD, mouth opening, seen head pose)
    # track every frame on its own (MediaPipe static-image mode): landmarks depend on that frame alone. Video
    # mode (the default) starts each frame from the previous face region, so even a frozen half-open mouth
    # can read as opening and closing (by 0.05 at 128 px in tests/eval/test_mouth_dynamics.py, a third of
    # a talking mouth's range); static mode is ~20 % slower
    track_static: bool = False
    cpbd_every: int = 1  # CPBD on every N-th evaluated frame (0 = never; ~40 ms per 256 px frame)
    video: bool = True  # write the side-by-side video truth | generated (with the held-out audio)
    train_frames: int = 50  # also score this many training frames, evenly spread over the train split (0 = none)
    # LPIPS linear layers: the `lpips` package's weights/v0.1/vgg.pth (lin0..lin4), or a whole
    # lpips.LPIPS(net="vgg") state dict that also holds the backbone (not computed without)
    lpips_weights: Path | None = None
    # VGG16 backbone of LPIPS: torchvision's ImageNet vgg16 state dict (features.N.*; not needed when
    # lpips_weights holds the backbone)
    lpips_vgg_weights: Path | None = None
    fid_weights: Path | None = None  # pytorch-fid's Inception: pt_inception-2015-12-05-6726825d.pth (not computed without)
    syncnet_weights: Path | None = None  # syncnet_python's syncnet_v2.model: LSE-D, LSE-C, AV offset (not computed without)


class RendersMotion(Protocol):
    """What the evaluation needs from an avatar (`erlnet.render.avatar.Avatar` implements it)."""

    @property
    def image_size(self) -> int: ...

    def check_motion(self, motion: Motion) -> None: ...

    def render(self, motion: Motion, start: int = 0, stop: int | None = None) -> Any: ...


@dataclass
class AvatarEvaluation:
    """Result of `evaluate_subject`: summary metrics and the per-frame curves behind them.

    frames (T,) subject frame indices; series: per-frame (T,) float arrays (NaN where not measured);
    pose: (T, 3) (pitch, yaw, roll) degrees of the driving motion ("driving") and as seen by the tracker
    in the real ("truth") and rendered ("generated") frames; samples: a few (frame, truth, generated)
    (S, S, 3) uint8 images.
    """

    avatar: str
    subject: str
    fps: float
    image_size: int
    frames: np.ndarray
    metrics: dict[str, Any]
    series: dict[str, np.ndarray]
    pose: dict[str, np.ndarray]
    samples: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    video: Path | None = None
    notes: list[str] = field(default_factory=list)
    # the training frames scored too (`EvaluateConfig.train_frames`): subject indices (N,) and per-frame
    # (N,) curves psnr, ssim, mouth_psnr, mouth_ssim, mouth_open_generated, mouth_open_truth
    train_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    train_series: dict[str, np.ndarray] = field(default_factory=dict)


# (key, label, unit, format): the rows of the metrics table, in order.
TABLE: list[tuple[str, str, str, str]] = [
    ("psnr", "PSNR", "dB", ".2f"),
    ("ssim", "SSIM", "", ".4f"),
    ("mouth_psnr", "mouth-box PSNR", "dB", ".2f"),
    ("mouth_ssim", "mouth-box SSIM", "", ".4f"),
    ("mouth_open_corr", "mouth opening correlation", "", ".3f"),
    ("mouth_open_ratio", "mouth opening amplitude ratio", "", ".2f"),
    ("cpbd_generated", "CPBD generated", "", ".3f"),
    ("cpbd_truth", "CPBD truth", "", ".3f"),
    ("mouth_lmd_px", "mouth LMD", "px", ".2f"),
    ("neck_l1", "neck-band |error|", "/255", ".2f"),
    ("neck_psnr", "neck-band PSNR", "dB", ".2f"),
    ("pose_error_deg", "head-pose error (seen)", "deg", ".2f"),
    ("face_found_generated", "face found in rendered frames", "", ".0%"),
    ("render_fps", "render speed", "frames/s", ".2f"),
    ("train_psnr", "training frames: PSNR", "dB", ".2f"),
    ("train_mouth_psnr", "training frames: mouth-box PSNR", "dB", ".2f"),
    ("train_mouth_open_corr", "training frames: mouth opening correlation", "", ".3f"),
    ("train_mouth_open_ratio", "training frames: mouth opening amplitude ratio", "", ".2f"),
    ("lpips", "LPIPS", "", ".4f"),
    ("fid", "FID", "", ".2f"),
    ("lse_d", "LSE-D (SyncNet distance)", "", ".3f"),
    ("lse_c", "LSE-C (SyncNet confidence)", "", ".3f"),
    ("av_offset", "SyncNet audio-video offset", "frames", "d"),
    ("lse_d_truth", "LSE-D truth", "", ".3f"),
    ("lse_c_truth", "LSE-C truth", "", ".3f"),
]


def format_value(value: Any, spec: str) -> str:
    """A metric as text: numbers with `spec`, NaN as '-', strings (reasons) as they are."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(ev: AvatarEvaluation) -> str:
    """The metrics as a two-column text table."""
    rows = []
    for key, label, unit, spec in TABLE:
        value = ev.metrics.get(key)
        with_unit = unit and not isinstance(value, str)  # a reason instead of a number has no unit
        rows.append((label + (f" ({unit})" if with_unit else ""), format_value(value, spec)))
    width = max(len(k) for k, _ in rows)
    train = f" (+ {len(ev.train_frames)} training frames)" if len(ev.train_frames) else ""
    head = (f"avatar evaluation on {len(ev.frames)} held-out frames{train} of {ev.subject} "
            f"at {ev.image_size}x{ev.image_size}")
    return "\n".join([head, "-" * len(head)] + [f"{k:<{width}}  {v}" for k, v in rows])


def learned_metrics(cfg: EvaluateConfig) -> LearnedMetrics:
    """LPIPS / FID / SyncNet networks of the weights given in `cfg` (each needs a pretrained network
    that erlnet does not ship or download); a bad file is an `InputError` before anything renders."""
    from erlnet.eval.learned import LearnedMetrics

    return LearnedMetrics.load(cfg.lpips_weights, cfg.lpips_vgg_weights, cfg.fid_weights, cfg.syncnet_weights,
                               device=cfg.device)


# ---------------------------------------------------------------- helpers


def held_out_frames(subject: Subject, max_frames: int = 0, stride: int = 1) -> np.ndarray:
    """Subject frame indices after the train split, every `stride`-th, at most `max_frames` (0 = all)."""
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    start = int(subject.manifest.split.get("train", (0, 0))[1])
    idx = np.arange(start, len(subject), stride)
    if max_frames > 0:
        idx = idx[:max_frames]
    if len(idx) == 0:
        raise InputError(f"{subject.root}: no held-out frames after the train split (frames {start}..{len(subject)})")
    return idx


def training_frames(subject: Subject, n: int) -> np.ndarray:
    """Up to `n` subject frame indices spread evenly over the train split, first and last included
    (all of it when it is shorter; none for n = 0 or an empty split)."""
    a, b = (int(v) for v in subject.manifest.split.get("train", (0, 0)))
    if n <= 0 or b <= a:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(a, b - 1, min(n, b - a)).round().astype(np.int64))


def held_out_audio(subject: Subject, frames: np.ndarray) -> np.ndarray | None:
    """The subject's audio under contiguous `frames` (T,) -> (S,) float32 at 16 kHz, or None."""
    from erlnet.io.audio import load_audio

    path = subject.root / "audio.wav"
    if not path.exists():
        return None
    wav = load_audio(path, sr=AUDIO_SR)
    if wav is None:
        return None
    a = int(round(frames[0] / subject.fps * AUDIO_SR))
    b = int(round((frames[-1] + 1) / subject.fps * AUDIO_SR))
    seg = wav[a:b]
    return np.pad(seg, (0, max(0, b - a - seg.size))).astype(np.float32)


def subject_motion(subject: Subject, frames: np.ndarray) -> Motion:
    """The tracked motion of the given subject frames (T,)."""
    from erlnet.inference.render_video import motion_from_subject

    m = motion_from_subject(subject, (int(frames[0]), int(frames[-1]) + 1))
    k = frames - frames[0]
    return Motion(m.expression[k], m.blink[k], m.rotation[k], m.translation[k], m.fps, m.representation)


def euler_deg(rotation: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations, NaN allowed -> (T, 3) (pitch, yaw, roll) degrees, NaN where missing."""
    from erlnet.face.pose import euler_from_matrix

    r = np.asarray(rotation, np.float64)
    out = np.full((len(r), 3), np.nan)
    ok = np.isfinite(r).all(axis=(1, 2))
    if ok.any():
        out[ok] = euler_from_matrix(r[ok], degrees=True)
    return out


def seen_poses(lms: np.ndarray, canonical: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Head rotations (T, 3, 3) fitted to tracked landmarks (T, 478, 3) pixels; NaN where no face."""
    from erlnet.face.pose import solve_poses

    return solve_poses(lms, canonical, K).R.astype(np.float64)


def _labels(subject: Subject, i: int, size: int) -> np.ndarray:
    """Labels of frame i at `size` (nearest neighbour: the band around the seam is ~6 % of the image
    wide, so a one-pixel shift of the seam does not matter; training's majority resize lives with
    Lightning in erlnet.train.data, which the evaluation does not import)."""
    import cv2

    m = subject.mask(i)
    return m if m.shape[0] == size else cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)


class _Trackers:
    """Two MediaPipe trackers, in video or static-image mode (one per stream), or none."""

    def __init__(self, enabled: bool, static: bool = False) -> None:
        self.truth = self.generated = None
        if enabled:
            from erlnet.face.tracking import FaceTracker, TrackerConfig

            cfg = TrackerConfig(count_faces_every=0, static_image=static)
            self.truth, self.generated = FaceTracker(cfg), FaceTracker(cfg)

    def track(self, tracker: Any, image: np.ndarray) -> np.ndarray:
        lms = tracker.process(image).landmarks if tracker is not None else None
        return np.full((tp.N_LANDMARKS, 3), np.nan, np.float32) if lms is None else lms

    def close(self) -> None:
        for t in (self.truth, self.generated):
            if t is not None:
                t.close()


# ---------------------------------------------------------------- the evaluation

# Per-frame curves of every scored set of frames (held-out and training).
CORE_SERIES = ("psnr", "ssim", "mouth_psnr", "mouth_ssim")
HELD_OUT_SERIES = ("neck_l1", "neck_mse", "cpbd_generated", "cpbd_truth")


@dataclass
class _Scored:
    """Per-frame results of `_score_frames` for T frames: curves (T,) (NaN where not measured),
    tracked landmarks (T, 478, 3) of the real and rendered frames (NaN without a face or tracking),
    and the seconds spent in the renderer."""

    series: dict[str, np.ndarray]
    lms_true: np.ndarray
    lms_gen: np.ndarray
    render_s: float


# (k, subject frame i, truth, rendered, the curves) of each frame; (b0, rendered, truths) of each batch
FrameHook = Callable[[int, int, np.ndarray, np.ndarray, dict[str, np.ndarray]], None]
BatchHook = Callable[[int, np.ndarray, list[np.ndarray]], None]


def _score_frames(av: RendersMotion, subject: Subject, frames: np.ndarray, motion: Motion, cfg: EvaluateConfig,
                  extra_series: tuple[str, ...] = (), on_frame: FrameHook | None = None,
                  on_batch: BatchHook | None = None, progress: bool = False, desc: str = "evaluate") -> _Scored:
    """Render `frames` (T,) of `subject` from `motion` (their tracked motion, T frames) in batches and
    score each against the real frame at the avatar's size: PSNR, SSIM, the mouth box, tracking.
    `extra_series` adds NaN curves for `on_frame` to fill; no image outlives its batch."""
    from erlnet.inference.animate import cpu_threads
    from erlnet.progress import progress as progress_bar
    from erlnet.render.avatar import resize_rgb, to_uint8_frames

    size, n = av.image_size, len(frames)
    landmarks = subject.tracking()["landmarks"]
    scale = size / subject.manifest.size
    series = {k: np.full(n, np.nan) for k in (*CORE_SERIES, *extra_series)}
    lms_true = np.full((n, tp.N_LANDMARKS, 3), np.nan, np.float32)
    lms_gen = np.full((n, tp.N_LANDMARKS, 3), np.nan, np.float32)
    trackers = _Trackers(cfg.track, cfg.track_static)  # fresh per set of frames: video-mode state does not cross sets
    render_s = 0.0
    try:
        with cpu_threads(cfg.render_threads):
            starts = range(0, n, cfg.batch_size)
            for b0 in progress_bar(starts, total=len(starts), desc=desc, enabled=progress):
                b1 = min(n, b0 + cfg.batch_size)
                t0 = time.perf_counter()
                preds = to_uint8_frames(av.render(motion, b0, b1).rgb)
                render_s += time.perf_counter() - t0
                truths = []
                for k, pred in zip(range(b0, b1), preds, strict=True):
                    i = int(frames[k])
                    truth = resize_rgb(subject.frame(i), size)
                    truths.append(truth)
                    series["psnr"][k] = M.psnr(pred, truth)
                    series["ssim"][k] = M.ssim(pred, truth)
                    series["mouth_psnr"][k], series["mouth_ssim"][k] = M.mouth_box_scores(pred, truth, landmarks[i],
                                                                                          scale)
                    lms_true[k] = trackers.track(trackers.truth, truth)
                    lms_gen[k] = trackers.track(trackers.generated, pred)
                    if on_frame is not None:
                        on_frame(k, i, truth, pred, series)
                if on_batch is not None:
                    on_batch(b0, preds, truths)
    finally:
        trackers.close()
    return _Scored(series, lms_true, lms_gen, render_s)


def evaluate_subject(
    avatar: str | Path | RendersMotion, subject_dir: str | Path, out_dir: str | Path | None = None,
    config: EvaluateConfig | None = None, progress: bool = False,
) -> AvatarEvaluation:
    """Render the held-out frames of `subject_dir` with `avatar` (a directory or a loaded avatar) and
    score them, and `config.train_frames` of its training frames (see the module doc). With `out_dir`,
    the side-by-side video of the held-out frames is written there."""
    from erlnet.render.avatar import load_avatar, scaled_intrinsics

    cfg = config or EvaluateConfig()
    if cfg.batch_size < 1 or cfg.cpbd_every < 0 or cfg.train_frames < 0:
        raise InputError("batch_size must be >= 1, cpbd_every >= 0 and train_frames >= 0")
    learned = learned_metrics(cfg)
    if isinstance(avatar, (str, Path)):
        if not Path(avatar).is_dir():
            raise InputError(f"{avatar}: no such avatar directory")
        av, avatar_name = load_avatar(avatar, device=cfg.device), str(avatar)
    else:
        av, avatar_name = avatar, type(avatar).__name__
    subject = Subject(subject_dir)
    frames = held_out_frames(subject, cfg.max_frames, cfg.stride)
    motion = subject_motion(subject, frames)
    av.check_motion(motion)
    train = training_frames(subject, cfg.train_frames)
    train_motion = subject_motion(subject, train) if len(train) else None
    if train_motion is not None:
        av.check_motion(train_motion)
    size, n = av.image_size, len(frames)
    tr = subject.tracking()
    scale = size / subject.manifest.size
    K = scaled_intrinsics(subject.manifest.K, subject.manifest.size, size)
    wav = held_out_audio(subject, frames) if cfg.stride == 1 else None
    learned.begin(n, fps=float(subject.fps), wav=wav, landmarks=tr["landmarks"][frames] * scale,
                  no_audio="SyncNet needs every frame: stride 1" if cfg.stride != 1 else "the subject has no audio")
    notes: list[str] = []

    keep = set(np.unique(np.linspace(0, n - 1, min(N_SAMPLES, n)).round().astype(int)).tolist())
    samples: list[tuple[int, np.ndarray, np.ndarray]] = []
    writer = None
    video_path = None
    if cfg.video and out_dir is not None:
        if size % 2:
            notes.append(f"no side-by-side video: H.264 needs an even frame size, the avatar renders {size} px")
        else:
            from erlnet.io.video import VideoWriter

            video_path = Path(out_dir) / SIDE_BY_SIDE
            writer = VideoWriter(video_path, fps=int(round(subject.fps)), size=(2 * size, size), audio=wav,
                                 sample_rate=AUDIO_SR)

    def held_out_frame(k: int, i: int, truth: np.ndarray, pred: np.ndarray, series: dict[str, np.ndarray]) -> None:
        band = M.neck_band(_labels(subject, i, size), tr["landmarks"][i], scale)
        series["neck_l1"][k], series["neck_mse"][k] = M.band_error(pred, truth, band)
        if cfg.cpbd_every and k % cfg.cpbd_every == 0:
            series["cpbd_generated"][k], series["cpbd_truth"][k] = M.cpbd(pred), M.cpbd(truth)
        if k in keep:
            samples.append((i, truth.copy(), pred.copy()))
        if writer is not None:
            writer.write(np.concatenate([truth, pred], axis=1))

    try:
        held = _score_frames(av, subject, frames, motion, cfg, HELD_OUT_SERIES, held_out_frame,
                             lambda b0, preds, truths: learned.add(b0, preds, np.stack(truths)), progress)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    trained = None
    if train_motion is not None:
        trained = _score_frames(av, subject, train, train_motion, cfg, progress=progress,
                                desc="evaluate (training frames)")

    learned_values, learned_series = learned.finish()
    held.series.update(learned_series)
    notes += learned.notes
    ev = _summarise(av, avatar_name, subject, frames, motion, held, K, wav, samples, video_path, notes,
                    learned_values, cfg)
    ev.metrics.update(_train_metrics(train, trained, cfg))
    if trained is not None:
        ev.train_frames = train
        ev.train_series = trained.series | {"mouth_open_generated": tp.mouth_opening(trained.lms_gen),
                                            "mouth_open_truth": tp.mouth_opening(trained.lms_true)}
    return ev


def _nanmean(x: np.ndarray) -> float:
    """Mean over the measured (non-NaN) entries; NaN when none is (+inf entries give +inf)."""
    return float(np.nanmean(x)) if (~np.isnan(x)).any() else float("nan")


def _mouth_metrics(scored: _Scored, cfg: EvaluateConfig) -> dict[str, Any]:
    """Mouth-box PSNR/SSIM and mouth dynamics (opening correlation, amplitude ratio) of scored frames;
    an opening metric that cannot be measured is a "not computed (why)" string."""
    d = M.opening_dynamics(tp.mouth_opening(scored.lms_gen), tp.mouth_opening(scored.lms_true))
    out: dict[str, Any] = {"mouth_psnr": _nanmean(scored.series["mouth_psnr"]),
                           "mouth_ssim": _nanmean(scored.series["mouth_ssim"]),
                           "mouth_open_corr": d.corr, "mouth_open_ratio": d.ratio, "mouth_open_frames": d.frames}
    no_face = not np.isfinite(scored.lms_gen).all(axis=(1, 2)).any()
    why = "no face found in the rendered frames" if no_face else d.reason
    for key in ("mouth_open_corr", "mouth_open_ratio"):
        if not cfg.track:
            out[key] = "not computed (tracking off)"
        elif math.isnan(out[key]):
            out[key] = f"not computed ({why})"
    return out


def _train_metrics(frames: np.ndarray, scored: _Scored | None, cfg: EvaluateConfig) -> dict[str, Any]:
    """The train_... metrics: PSNR, SSIM, mouth box and mouth dynamics of the training frames."""
    keys = ("psnr", "ssim", "mouth_psnr", "mouth_ssim", "mouth_open_corr", "mouth_open_ratio")
    if scored is None:
        why = "not computed (train_frames = 0)" if cfg.train_frames == 0 else "not computed (no training frames)"
        return {"train_frames": 0} | {f"train_{k}": why for k in keys}
    m = {"psnr": float(np.mean(scored.series["psnr"])), "ssim": float(np.mean(scored.series["ssim"]))}
    m |= _mouth_metrics(scored, cfg)
    return {"train_frames": len(frames)} | {f"train_{k}": v for k, v in m.items()}


def _summarise(av: Any, avatar_name: str, subject: Subject, frames: np.ndarray, motion: Motion, held: _Scored,
               K: np.ndarray, wav: np.ndarray | None, samples: list, video: Path | None, notes: list[str],
               learned: dict[str, Any], cfg: EvaluateConfig) -> AvatarEvaluation:
    n = len(frames)
    series, lms_true, lms_gen = held.series, held.lms_true, held.lms_gen
    found_gen = np.isfinite(lms_gen).all(axis=(1, 2))
    found_true = np.isfinite(lms_true).all(axis=(1, 2))
    lmd, lmd_frames = M.mouth_lmd(lms_gen, lms_true) if cfg.track else (float("nan"), 0)
    series["mouth_open_generated"] = tp.mouth_opening(lms_gen)
    series["mouth_open_truth"] = tp.mouth_opening(lms_true)
    if wav is not None:
        from erlnet.motion.corpus import frame_envelope

        series["audio_db"] = frame_envelope(wav, AUDIO_SR, n, subject.fps).astype(np.float64)
    canonical = subject.tracking()["canonical"]
    r_true, r_gen = seen_poses(lms_true, canonical, K), seen_poses(lms_gen, canonical, K)
    both = np.isfinite(r_true).all(axis=(1, 2)) & np.isfinite(r_gen).all(axis=(1, 2))
    from erlnet.face.pose import rotation_angle_deg

    pose_err = float(rotation_angle_deg(r_gen[both], r_true[both]).mean()) if both.any() else float("nan")
    series["pose_error_deg"] = np.full(n, np.nan)
    series["pose_error_deg"][both] = rotation_angle_deg(r_gen[both], r_true[both])

    neck_mse = _nanmean(series["neck_mse"])
    metrics: dict[str, Any] = {
        "frames": n,
        "psnr": float(np.mean(series["psnr"])),
        "ssim": float(np.mean(series["ssim"])),
        **_mouth_metrics(held, cfg),
        "cpbd_generated": _nanmean(series["cpbd_generated"]),
        "cpbd_truth": _nanmean(series["cpbd_truth"]),
        "mouth_lmd_px": lmd,
        "mouth_lmd_frames": lmd_frames,
        "neck_l1": _nanmean(series["neck_l1"]),
        "neck_psnr": float(10 * np.log10(255.0**2 / max(neck_mse, 1e-10))) if np.isfinite(neck_mse) else float("nan"),
        "pose_error_deg": pose_err,
        "face_found_generated": float(found_gen.mean()) if cfg.track else float("nan"),
        "face_found_truth": float(found_true.mean()) if cfg.track else float("nan"),
        "render_fps": n / held.render_s if held.render_s > 0 else float("nan"),
        **learned,
    }
    if not cfg.track:
        for k in ("mouth_lmd_px", "pose_error_deg", "face_found_generated"):
            metrics[k] = "not computed (tracking off)"
    elif lmd_frames == 0:
        why = "no face found in the rendered frames" if not found_gen.any() else "no frame with a face in both"
        metrics["mouth_lmd_px"] = metrics["pose_error_deg"] = f"not computed ({why})"
        notes.append(f"mouth LMD and head-pose error: {why} (MediaPipe at {av.image_size} px)")
    if cfg.cpbd_every == 0:
        metrics["cpbd_generated"] = metrics["cpbd_truth"] = "not computed (cpbd_every = 0)"
    elif av.image_size < M.CPBD_BLOCK:
        metrics["cpbd_generated"] = metrics["cpbd_truth"] = f"not computed (frames smaller than {M.CPBD_BLOCK} px)"
    pose = {"driving": euler_deg(motion.rotation), "truth": euler_deg(r_true), "generated": euler_deg(r_gen)}
    return AvatarEvaluation(avatar=avatar_name, subject=str(subject.root), fps=float(subject.fps),
                            image_size=int(av.image_size), frames=frames, metrics=metrics, series=series,
                            pose=pose, samples=samples, video=video, notes=notes)
