"""Metrics of generated motion (numpy only), and `evaluate_motion`, the `erlnet eval-motion` driver.

Metric functions work on plain arrays so tests can check them on hand-made signals:

    landmark_distance   mean 3D distance of landmarks (LMD), in the unit of the input
    lagged_correlation  Pearson correlation of two signals at every lag in [-max_lag, max_lag]
    av_sync             mouth opening vs audio loudness: correlation at lag 0, best lag, its correlation
    pose_statistics     angular / translational speed and range of a head-pose track
    style_features      per-clip summary of expressions (region displacements: mean and spread)
    NearestCentroid     a tiny classifier of those features (z-scored, nearest class mean)

Protocol of `evaluate_motion` (every held-out corpus clip with speech, driven by its own audio
features; the style clip is another clip of the same speaker and style when the corpus has one,
else the clip itself; up to `style_clips` (5) such clips, training clips first, each (clip, style)
pair a sample of the adf rows: one style clip's mean expression moves the mouth LMD of a whole
speaker, so a single reference makes the comparison hinge on which clip it is):
- LMD: generated and tracked expressions are decoded with the corpus representation onto the
  speaker's neutral face (canonical head frame, so pose does not enter); mean distance of the mouth
  points (`topology.MOUTH`) and of all points, in millimetres.
- Sync: correlation of the decoded mouth opening with the per-frame loudness (dB), at lag 0 and at
  the best lag; `sync_offset` maximises the mean correlation curve over clips (should be ~0). A
  smooth regressor can correlate *more* than real faces do: compare with the truth row.
- Pose: speed and 5-95 % range of rotation and translation, against the tracked clips.
- Style: a nearest-centroid classifier on `style_features` of tracked, emotion-labelled clips
  without speech that are not held out (MEAD); the held-out labelled clips (an unseen actor) are
  used as style clips for held-out speech, and the generated motion is classified. The truth row
  classifies those clips' own tracked motion (what the features can do at best).
- Baselines: "mean" (the training mean expression, head still at the clip's mean pose) and
  "regressor" (the no-VQ audio -> expression net of the bundle; head still as well).
- Bound: "vq" is the tracked expression passed through the stage-1 VQ-VAE (`ADFModel.reconstruct`):
  what stage 2 could reproduce at best. `codebooks` reports the perplexity (effective number of codes)
  of the expression codes on those held-out clips and of the training-time EMA usage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from erlnet.errors import InputError
from erlnet.face import topology as tp
from erlnet.face.pose import euler_from_matrix, rotation_angle_deg

if TYPE_CHECKING:
    from erlnet.face.representation import MotionRepresentation
    from erlnet.inference.animate import MotionModel
    from erlnet.motion.corpus import ClipData, ClipInfo, Corpus

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- signal metrics
def landmark_distance(pred: np.ndarray, true: np.ndarray, idx: np.ndarray | None = None) -> float:
    """LMD: mean Euclidean distance between corresponding landmarks over frames and points.

    pred, true (T, N, 3) in the same unit (the result has it); idx selects points (default all).
    """
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 3:
        raise InputError(f"landmark_distance needs two (T, N, 3) arrays of one shape, got {pred.shape} and {true.shape}")
    if idx is not None:
        pred, true = pred[:, idx], true[:, idx]
    return float(np.linalg.norm(pred - true, axis=-1).mean())


def lagged_correlation(video: np.ndarray, audio: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of video[t + k] with audio[t] for k in [-max_lag, max_lag].

    video, audio (T,) -> lags (2 max_lag + 1,) int, corr (2 max_lag + 1,) float (NaN where a signal is
    constant over the overlap). A positive best lag means the video follows the audio by k frames.
    """
    v = np.asarray(video, np.float64)
    a = np.asarray(audio, np.float64)
    if v.shape != a.shape or v.ndim != 1:
        raise InputError(f"lagged_correlation needs two (T,) signals of one length, got {v.shape} and {a.shape}")
    if max_lag < 0 or len(v) - max_lag < 3:
        raise InputError(f"signals of {len(v)} frames are too short for lags up to {max_lag}")
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), np.nan)
    for i, k in enumerate(lags):
        x = v[k:] if k >= 0 else v[: len(v) + k]
        y = a[: len(a) - k] if k >= 0 else a[-k:]
        corr[i] = _pearson(x, y)
    return lags, corr


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 else float("nan")


@dataclass
class SyncResult:
    """Mouth opening vs loudness of one clip."""

    corr_at_zero: float  # Pearson correlation without shift
    best_offset: int  # lag (frames) of the highest correlation; > 0: mouth after the audio
    best_corr: float  # correlation at that lag


def av_sync(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = 5) -> SyncResult:
    """Audio-visual sync of one clip: mouth opening (T,) vs audio loudness (T,) dB."""
    lags, corr = lagged_correlation(mouth, envelope, max_lag)
    if np.all(np.isnan(corr)):
        return SyncResult(float("nan"), 0, float("nan"))
    best = int(np.nanargmax(corr))
    return SyncResult(float(corr[max_lag]), int(lags[best]), float(corr[best]))


def mean_rotation(R: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations (T, 3, 3) -> (3, 3): the mean matrix projected onto SO(3)."""
    m = np.asarray(R, np.float64).mean(axis=0)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


def pose_statistics(rotation: np.ndarray, translation: np.ndarray, fps: float = 25.0) -> dict[str, float]:
    """Speed and range of a head-pose track. rotation (T, 3, 3), translation (T, 3) metres.

    angular_speed_deg_s: mean frame-to-frame rotation angle x fps; rotation_range_deg: mean over
    (pitch, yaw, roll) of the 5-95 percentile range of the angles relative to the mean rotation;
    translation_speed_mm_s and translation_range_mm likewise (x, y, z).
    """
    R = np.asarray(rotation, np.float64)
    t = np.asarray(translation, np.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3) or t.shape != (len(R), 3) or len(R) < 2:
        raise InputError(f"pose_statistics needs rotation (T, 3, 3) and translation (T, 3) with T >= 2, "
                         f"got {R.shape} and {t.shape}")
    ref = mean_rotation(R)
    angles = np.degrees(euler_from_matrix(R @ ref.T))
    step = rotation_angle_deg(R[:-1], R[1:])
    rng = np.percentile(angles, 95, axis=0) - np.percentile(angles, 5, axis=0)
    t_mm = 1000.0 * t
    t_rng = np.percentile(t_mm, 95, axis=0) - np.percentile(t_mm, 5, axis=0)
    return {
        "angular_speed_deg_s": float(step.mean() * fps),
        "rotation_range_deg": float(rng.mean()),
        "translation_speed_mm_s": float(np.linalg.norm(np.diff(t_mm, axis=0), axis=1).mean() * fps),
        "translation_range_mm": float(t_rng.mean()),
    }


# ---------------------------------------------------------------- style features and classifier
# Regions whose mean displacement summarises an expression: brows, lids, lips, mouth corners, chin.
STYLE_REGIONS: dict[str, np.ndarray] = {
    "right_brow": tp.RIGHT_BROW,
    "left_brow": tp.LEFT_BROW,
    "right_eye": tp.RIGHT_EYE_CONTOUR,
    "left_eye": tp.LEFT_EYE_CONTOUR,
    "upper_lip": np.array([37, 0, 267, 82, 13, 312]),
    "lower_lip": np.array([84, 17, 314, 87, 14, 317]),
    "right_corner": np.array([61, 78]),
    "left_corner": np.array([291, 308]),
    "chin": np.array([152, 175, 199, 200]),
    "cheeks": np.array([50, 280, 205, 425]),
}


def region_displacements(expression: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Mean displacement per `STYLE_REGIONS` entry. expression (T, 3K) point-major over the landmark
    ids `indices` (K,) -> (T, 3 R); regions whose points are not all present are skipped."""
    expr = np.asarray(expression, np.float64)
    pos = {int(p): k for k, p in enumerate(indices)}
    if expr.ndim != 2 or expr.shape[1] != 3 * len(indices):
        raise InputError(f"expected expressions (T, {3 * len(indices)}), got {expr.shape}")
    disp = expr.reshape(len(expr), -1, 3)
    cols = []
    for pts in STYLE_REGIONS.values():
        if all(int(p) in pos for p in pts):
            cols.append(disp[:, [pos[int(p)] for p in pts]].mean(axis=1))
    if not cols:
        raise InputError("the expression representation holds none of the style regions")
    return np.concatenate(cols, axis=1)


def style_features(expression: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Clip-level style summary: mean and standard deviation over time of the region displacements.
    expression (T, 3K) -> (6 R,) float64."""
    r = region_displacements(expression, indices)
    return np.concatenate([r.mean(axis=0), r.std(axis=0)])


@dataclass
class NearestCentroid:
    """Nearest class mean of z-scored features (few samples per class: no parameters to overfit)."""

    classes: list[str] = field(default_factory=list)
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, x: np.ndarray, labels: Sequence[str]) -> NearestCentroid:
        """x (N, F) features, labels (N,)."""
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or len(x) != len(labels) or len(x) == 0:
            raise InputError(f"need features (N, F) and N labels, got {x.shape} and {len(labels)} labels")
        self.classes = sorted(set(labels))
        self.mean = x.mean(axis=0)
        self.scale = np.maximum(x.std(axis=0), 1e-9)
        z = (x - self.mean) / self.scale
        lab = np.asarray(labels)
        self.centroids = np.stack([z[lab == c].mean(axis=0) for c in self.classes])
        return self

    def predict(self, x: np.ndarray) -> list[str]:
        """x (N, F) -> N class names."""
        z = (np.atleast_2d(np.asarray(x, np.float64)) - self.mean) / self.scale
        d = ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=-1)
        return [self.classes[i] for i in d.argmin(axis=1)]


# ---------------------------------------------------------------- the evaluation
METHODS = ("truth", "vq", "adf", "regressor", "mean")


@dataclass
class EvalConfig:
    """Settings of `erlnet eval-motion`."""

    max_lag: int = 5  # largest audio-visual offset searched, frames (either way)
    seed: int = 0  # seed of the code sampling
    max_clips: int = 0  # evaluate at most this many held-out speech clips (0 = all)
    style_with_label: bool = True  # also score style accuracy when the emotion label is given with the clip
    style_clips: int = 5  # style references per held-out clip (same speaker and style); adf rows average over the pairs
    device: str = "cpu"  # torch device
    cpu_threads: int = 1  # torch CPU threads while generating (0 = torch's default)


@dataclass
class ClipScores:
    """Per-clip numbers of one method."""

    lmd_mouth_mm: float = float("nan")
    lmd_face_mm: float = float("nan")
    sync: SyncResult | None = None
    pose: dict[str, float] | None = None


def _decode_mm(rep: MotionRepresentation, expr: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Expressions (T, D) -> canonical landmarks (T, 478, 3) in millimetres."""
    return 1000.0 * rep.decode(expr, neutral).astype(np.float64)


def _score(rep: MotionRepresentation, expr: np.ndarray, truth_lms: np.ndarray | None, neutral: np.ndarray,
           envelope: np.ndarray | None, rotation: np.ndarray | None, translation: np.ndarray | None,
           fps: float, max_lag: int) -> ClipScores:
    lms = _decode_mm(rep, expr, neutral)
    s = ClipScores()
    if truth_lms is not None:
        s.lmd_mouth_mm = landmark_distance(lms, truth_lms, tp.MOUTH)
        s.lmd_face_mm = landmark_distance(lms, truth_lms)
    if envelope is not None and len(lms) - max_lag >= 3:
        s.sync = av_sync(tp.mouth_opening(lms), envelope, max_lag)
    if rotation is not None and translation is not None:
        s.pose = pose_statistics(rotation, translation, fps)
    return s


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if v is not None], np.float64)
    return float(np.nanmean(arr)) if arr.size and np.isfinite(arr).any() else float("nan")


def _aggregate(scores: list[ClipScores], curves: list[np.ndarray], lags: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lmd_mouth_mm": _nanmean([s.lmd_mouth_mm for s in scores]),
        "lmd_face_mm": _nanmean([s.lmd_face_mm for s in scores]),
    }
    syncs = [s.sync for s in scores if s.sync is not None]
    out["sync_corr"] = _nanmean([s.corr_at_zero for s in syncs])
    out["sync_best_corr"] = _nanmean([s.best_corr for s in syncs])
    offsets = [s.best_offset for s in syncs if np.isfinite(s.best_corr)]
    out["sync_offset_median"] = float(np.median(offsets)) if offsets else float("nan")
    # The offset that maximises the mean correlation curve over clips: one number for the corpus.
    good = [c for c in curves if np.isfinite(c).all()]
    out["sync_offset"] = int(lags[int(np.argmax(np.mean(good, axis=0)))]) if good else None
    poses = [s.pose for s in scores if s.pose is not None]
    for key in ("angular_speed_deg_s", "rotation_range_deg", "translation_speed_mm_s", "translation_range_mm"):
        out[key] = _nanmean([p[key] for p in poses]) if poses else float("nan")
    return out


def _style_partners(corpus: Corpus, clip: ClipInfo, n: int = 1) -> list[ClipInfo]:
    """Up to `n` style clips for a held-out clip: other clips of the same speaker and style (training
    clips first, by id), else the clip itself."""
    same = [c for c in corpus.clips if c.speaker == clip.speaker and c.style == clip.style and c.id != clip.id]
    same.sort(key=lambda c: (c.heldout, c.id))
    return same[: max(1, n)] or [clip]


def _style_task(corpus: Corpus, reference: str) -> tuple[NearestCentroid | None, list[ClipInfo], dict[str, Any]]:
    """Classifier trained on tracked, emotion-labelled clips that are not held out; the held-out
    labelled clips are the style references to test. Also scores the classifier on those clips'
    own tracked motion (the 'truth' row)."""
    idx = corpus.representation.indices
    labelled = [c for c in corpus.clips if c.emotion is not None and not c.has_audio]
    train = [c for c in labelled if not c.heldout]
    test = [c for c in labelled if c.heldout and c.emotion in {t.emotion for t in train}]
    if len({c.emotion for c in train}) < 2 or not test:
        return None, [], {}
    feats = [style_features(corpus.load(c, reference).expression, idx) for c in train]
    clf = NearestCentroid().fit(np.stack(feats), [c.emotion for c in train])
    truth_pred = clf.predict(np.stack([style_features(corpus.load(c, reference).expression, idx) for c in test]))
    info = {"classes": clf.classes, "train_clips": len(train), "test_clips": len(test),
            "chance": 1.0 / len(clf.classes),
            "truth_accuracy": float(np.mean([p == c.emotion for p, c in zip(truth_pred, test, strict=True)]))}
    return clf, test, info


def evaluate_motion(model_dir: str | Path, corpus_dir: str | Path, config: EvalConfig | None = None,
                    show_progress: bool = False) -> dict[str, Any]:
    """Score the motion model and both baselines on the corpus' held-out clips (see the module doc).

    Returns a JSON-able dict: per-method aggregates, style accuracy, generation speed, clip lists.
    """
    from erlnet.inference.animate import cpu_threads

    cfg = config or EvalConfig()
    with cpu_threads(cfg.cpu_threads):
        return _evaluate(model_dir, corpus_dir, cfg, show_progress)


def _evaluate(model_dir: str | Path, corpus_dir: str | Path, cfg: EvalConfig, show_progress: bool) -> dict[str, Any]:
    from erlnet.inference.animate import load_motion_model, mean_pose
    from erlnet.motion.corpus import Corpus
    from erlnet.progress import progress

    corpus = Corpus(corpus_dir)
    mm = load_motion_model(model_dir, cfg.device)
    if mm.stages.get("stage2", 0) <= 0:
        raise InputError(f"{model_dir}: the motion model has not been trained through stage 2")
    key = mm.audio.setup().cache_key
    if key != corpus.audio_cache_key:
        raise InputError(f"{corpus_dir}: corpus audio features ({corpus.audio_cache_key}) are not the ones the "
                         f"model was trained on ({key}); rebuild the corpus with the model's audio encoder")
    if corpus.expression_dim != mm.model.expression_dim:
        raise InputError(f"{corpus_dir}: corpus expressions have {corpus.expression_dim} dims, the model "
                         f"{mm.model.expression_dim}")
    if abs(corpus.fps - mm.fps) > 1e-6:
        raise InputError(f"{corpus_dir}: corpus is at {corpus.fps:g} frames/s, the model at {mm.fps:g}")
    reference = str(mm.meta.get("reference", "speaker"))
    rep = corpus.representation
    min_style = mm.model.config.min_style_frames
    clips = [c for c in corpus.select("heldout", audio=True) if c.n_frames > 2 * cfg.max_lag + 3]
    if cfg.max_clips > 0:
        clips = clips[: cfg.max_clips]
    if not clips:
        raise InputError(f"{corpus_dir}: no held-out clips with speech to evaluate on")
    mean_expr = mm.model.norm.expression_mean.detach().cpu().numpy()
    scores: dict[str, list[ClipScores]] = {m: [] for m in METHODS}
    curves: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    gen_frames, gen_seconds = 0, 0.0
    held_codes: list[np.ndarray] = []
    lags = np.arange(-cfg.max_lag, cfg.max_lag + 1)
    skipped: list[str] = []
    style_cache: dict[str, ClipData] = {}  # the same few training clips are the style of a whole speaker's clips

    def load_style(p: ClipInfo) -> ClipData:
        if p.id not in style_cache:
            style_cache[p.id] = corpus.load(p, reference)
        return style_cache[p.id]

    for info in progress(clips, total=len(clips), desc="eval", enabled=show_progress, unit="clip"):
        clip = corpus.load(info, reference)
        styles = [clip if p.id == info.id else load_style(p) for p in _style_partners(corpus, info, cfg.style_clips)]
        styles = [st for st in styles if len(st) >= min_style]
        if not styles:
            skipped.append(info.id)
            continue
        truth_lms = _decode_mm(rep, clip.expression, clip.neutral)
        env = clip.envelope
        generated = []
        for style in styles:  # each (clip, style) pair is one sample of the adf rows
            t0 = time.perf_counter()
            generated.append(mm.model.generate(clip.audio, style.expression, style.rotation, style.translation,
                                               emotion=info.emotion, seed=cfg.seed))
            gen_seconds += time.perf_counter() - t0
            gen_frames += len(clip)
        ref = mean_pose(clip.rotation, clip.translation)
        still_r = np.repeat(ref[0][None], len(clip), axis=0)
        still_t = np.repeat(ref[1][None], len(clip), axis=0)
        outputs: dict[str, list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]] = {
            "truth": [(clip.expression, clip.rotation, clip.translation)],
            "adf": [(g["expression"], g["rotation"], g["translation"]) for g in generated],
            "mean": [(np.repeat(mean_expr[None], len(clip), axis=0), still_r, still_t)],
        }
        rec = mm.model.reconstruct(clip.expression, clip.blink, clip.rotation, clip.translation, emotion=info.emotion)
        held_codes.append(rec["codes"].reshape(-1, rec["codes"].shape[-1]))
        outputs["vq"] = [(rec["expression"], None, None)]
        if mm.regressor is not None:
            outputs["regressor"] = [(mm.regressor.generate(clip.audio, emotion=info.emotion)["expression"],
                                     still_r, still_t)]
        for m, samples in outputs.items():
            for expr, rot, trans in samples:
                s = _score(rep, expr, None if m == "truth" else truth_lms, clip.neutral, env, rot, trans,
                           clip.info.fps, cfg.max_lag)
                scores[m].append(s)
                if env is not None:
                    curves[m].append(lagged_correlation(tp.mouth_opening(_decode_mm(rep, expr, clip.neutral)), env,
                                                        cfg.max_lag)[1])
    methods = {m: _aggregate(scores[m], curves[m], lags) for m in METHODS if scores[m]}
    for m in ("vq", "regressor", "mean"):  # these rows do not move the head: no pose numbers
        if m in methods:
            for k in ("angular_speed_deg_s", "rotation_range_deg", "translation_speed_mm_s", "translation_range_mm"):
                methods[m][k] = float("nan")
    result: dict[str, Any] = {
        "model": str(Path(model_dir).resolve()), "corpus": str(Path(corpus_dir).resolve()),
        "stages": mm.stages, "reference": reference, "clips": [c.id for c in clips], "skipped_clips": skipped,
        "methods": methods,
        "generation_x_realtime": (gen_frames / mm.fps) / gen_seconds if gen_seconds > 0 else float("nan"),
        "config": asdict(cfg),
        "codebooks": _codebook_report(mm.model, held_codes),
    }
    result["style"] = _style_accuracy(corpus, mm, clips, reference, cfg)
    return result


def code_perplexity(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Perplexity (exp of the entropy of the code histogram) per column of codes (M, S) -> (S,)."""
    codes = np.asarray(codes)
    out = []
    for col in codes.T:
        p = np.bincount(col, minlength=n_codes) / max(len(col), 1)
        p = p[p > 0]
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return np.asarray(out)


def _codebook_report(model: Any, held_codes: list[np.ndarray]) -> dict[str, Any]:
    """Codebook usage: EMA statistics from training, and perplexity of the held-out clips' codes."""
    vq = model.vq_expression
    out: dict[str, Any] = {"codebook_size": vq.n_codes, "levels": vq.cfg.levels, "groups": vq.cfg.n_groups,
                           **model.codebook_stats()}
    if held_codes:
        per = code_perplexity(np.concatenate(held_codes), vq.n_codes)
        out["expression_heldout_perplexity"] = float(per.mean())
        out["expression_heldout_perplexity_per_slot"] = [round(float(v), 1) for v in per]
    return out


def _style_accuracy(corpus: Corpus, mm: MotionModel, speech: list[ClipInfo], reference: str,
                    cfg: EvalConfig) -> dict[str, Any]:
    """Drive the model with held-out speech in the manner of each held-out emotion clip and classify."""
    clf, tests, info = _style_task(corpus, reference)
    if clf is None:
        return {"available": False, "reason": "the corpus has no held-out emotion-labelled style clips"}
    idx = corpus.representation.indices
    min_style = mm.model.config.min_style_frames
    out: dict[str, Any] = {"available": True, **info}
    preds: dict[str, list[str]] = {"adf": [], "adf_with_label": [], "regressor_with_label": [], "mean": []}
    truths: list[str] = []
    mean_expr = mm.model.norm.expression_mean.detach().cpu().numpy()
    for k, c in enumerate(tests):
        st = corpus.load(c, reference)
        if len(st) < min_style:
            continue
        audio = corpus.load(speech[k % len(speech)], reference).audio
        truths.append(c.emotion)
        gen = mm.model.generate(audio, st.expression, st.rotation, st.translation, emotion=None, seed=cfg.seed)
        preds["adf"].append(clf.predict(style_features(gen["expression"], idx)[None])[0])
        if cfg.style_with_label:
            gen = mm.model.generate(audio, st.expression, st.rotation, st.translation, emotion=c.emotion,
                                    seed=cfg.seed)
            preds["adf_with_label"].append(clf.predict(style_features(gen["expression"], idx)[None])[0])
            if mm.regressor is not None:
                reg = mm.regressor.generate(audio, emotion=c.emotion)["expression"]
                preds["regressor_with_label"].append(clf.predict(style_features(reg, idx)[None])[0])
        flat = np.repeat(mean_expr[None], len(audio), axis=0)
        preds["mean"].append(clf.predict(style_features(flat, idx)[None])[0])
    for k, p in preds.items():
        if p:
            out[f"{k}_accuracy"] = float(np.mean([a == b for a, b in zip(p, truths, strict=True)]))
    out["n_scored"] = len(truths)
    return out


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def format_report(result: dict[str, Any]) -> str:
    """The evaluation as a text table (one row per method)."""
    cols = [("LMD mouth mm", "lmd_mouth_mm", ".2f"), ("LMD face mm", "lmd_face_mm", ".2f"),
            ("sync r@0", "sync_corr", ".3f"), ("best r", "sync_best_corr", ".3f"),
            ("offset fr", "sync_offset", "d"), ("rot deg/s", "angular_speed_deg_s", ".1f"),
            ("rot range", "rotation_range_deg", ".1f"), ("trans mm/s", "translation_speed_mm_s", ".1f"),
            ("trans range", "translation_range_mm", ".1f")]
    rows = [["method"] + [c[0] for c in cols]]
    for m, vals in result["methods"].items():
        rows.append([m] + [_fmt(vals.get(k), f) for _, k, f in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    n = len(result["clips"]) - len(result["skipped_clips"])
    lines.insert(0, f"motion evaluation on {n} held-out clips (driven by their own audio); "
                    f"generation {result['generation_x_realtime']:.0f}x real time")
    cb = result.get("codebooks")
    if cb:
        lines.append(f"expression codebooks ({cb['levels']} level(s) x {cb['groups']} group(s) x {cb['codebook_size']} "
                     f"codes): perplexity {_fmt(cb.get('expression_heldout_perplexity'), '.0f')} on the held-out clips, "
                     f"{_fmt(cb.get('expression_perplexity'), '.0f')} in training (EMA); vq row = stage-1 reconstruction")
    st = result["style"]
    if st.get("available"):
        parts = [f"{k[:-9]} {_fmt(v, '.0%')}" for k, v in st.items() if k.endswith("_accuracy")]
        lines.append(f"style accuracy ({st['n_scored']} held-out emotion clips, {len(st['classes'])} classes, chance "
                     f"{st['chance']:.0%}): " + ", ".join(parts))
    else:
        lines.append(f"style accuracy: not available ({st.get('reason')})")
    return "\n".join(lines)


def json_safe(x: Any) -> Any:
    """Nested dicts / lists with NaN and infinities as None and numpy scalars as Python numbers."""
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_report(result: dict[str, Any], path: str | Path) -> Path:
    """Write the result as JSON (NaN -> null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=2, sort_keys=True))
    return path
