"""Does a mouth talk? The correlation of its opening with the loudness of the speech it goes with.

A mouth that speaks opens on loud syllables and closes in pauses, so its per-frame opening
(`face.topology.mouth_opening`: inner-lip gap / eye-corner distance) correlates with the speech's
per-frame loudness (`motion.corpus.frame_envelope`, dB). Real talking clips score what a real mouth
scores; a generated video should score at least that (issue 12). The measurement needs no reference
frames, so it applies to any generated video, driven by any speech.

    opening_loudness        two curves (opening, loudness dB) -> `OpeningLoudness`: Pearson r at lag 0
                            and the best r within +-`max_lag` frames
    loudness_envelope       audio -> the per-frame loudness the correlation uses (dB, floored)
    video_opening           an mp4 -> the opening per frame, tracked with MediaPipe
    video_curves / video_opening_loudness      an mp4 and its speech (a file, samples, or the video's
                            own audio track) -> both curves / their correlation
    subject_curves / subject_opening_loudness  a preprocessed subject: its tracked landmarks and
                            audio.wav (no re-tracking)

Conventions:
- Lag k > 0: the mouth follows the audio by k frames (opening[t] is paired with loudness[t - k]).
  The best lag is the one of highest r (the most positive, not the largest |r|); ties go to the
  smaller |k|.
- The loudness is floored at `floor_db` below the clip's 95th-percentile frame (40 dB by default):
  digital silence reads -100 dB, and without a floor the few silent frames of a clip would weigh more
  in r than how the mouth follows the syllables. A mouth is shut at either level anyway.
- A mouth that does not visibly move (5-95 percentile range of the opening below `STILL_SPAN`) gets
  no correlation: r ignores amplitude, and a frozen frame re-encoded as video moves by ~1e-5, which
  can correlate with anything. The range is reported (`span`) beside r.
- Videos are tracked frame by frame as independent photos (`TrackerConfig(static_image=True)`):
  MediaPipe's video mode carries the previous frame's face region and jitters a frozen mouth by
  about 0.05 opening, which would read as a mouth that moves. Frames without a face are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from erlnet.errors import InputError
from erlnet.face import topology as tp

AUDIO_SR = 16000
MAX_LAG = 3  # frames each way searched for the best lag (120 ms at 25 frames/s)
FLOOR_DB = 40.0  # the loudness is floored this far below the clip's 95th-percentile frame
MIN_FRAMES = 10  # fewer pairs with both curves finite: not measurable
FLAT = 1e-9  # a loudness curve whose range is at most this is constant
# An opening whose 5-95 percentile range is below this is a still mouth (0.01 is a lip gap change of
# about 1 px at 256 px): no correlation is reported, however well its tiny motion (encoder noise,
# tracker jitter) happens to line up with the speech (r is scale-free).
STILL_SPAN = 0.01


@dataclass(frozen=True)
class OpeningLoudness:
    """Correlation of a mouth-opening curve with the loudness of its speech."""

    r: float  # Pearson r at lag 0; NaN when not measurable (see `reason`)
    best_r: float  # the highest r over lags -max_lag..max_lag; NaN when none is measurable
    best_lag: int  # its lag in frames (> 0: the mouth follows the audio); 0 when none is measurable
    frames: int  # frames at lag 0 where both curves are finite
    span: float  # 5-95 percentile range of the opening over its finite frames (NaN when none is)
    by_lag: tuple[float, ...]  # r at lags -max_lag..max_lag (NaN where not measurable)
    reason: str = ""  # why r is NaN; "" when it is a number

    @property
    def max_lag(self) -> int:
        return (len(self.by_lag) - 1) // 2

    def describe(self) -> str:
        """"opening-loudness correlation 0.61 (best 0.66 at lag +1)", or why it is not measured."""
        if math.isnan(self.r) and math.isnan(self.best_r):
            return f"opening-loudness correlation not computed ({self.reason})"
        r = "n/a" if math.isnan(self.r) else f"{self.r:.2f}"
        return f"opening-loudness correlation {r} (best {self.best_r:.2f} at lag {self.best_lag:+d})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> None)."""
        d = asdict(self)
        d["by_lag"] = [None if math.isnan(v) else round(v, 4) for v in self.by_lag]
        for k in ("r", "best_r", "span"):
            d[k] = None if math.isnan(d[k]) else round(d[k], 4)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpeningLoudness:
        """The inverse of `to_dict`."""
        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(r=num(d.get("r")), best_r=num(d.get("best_r")), best_lag=int(d.get("best_lag", 0)),
                   frames=int(d.get("frames", 0)), span=num(d.get("span")),
                   by_lag=tuple(num(v) for v in d.get("by_lag", ())),
                   reason=str(d.get("reason", "")))


def _pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, int, str]:
    """(r, pairs, reason) over the pairs where both are finite."""
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < MIN_FRAMES:
        return float("nan"), n, f"{n} frames with both a mouth and audio, need {MIN_FRAMES}"
    a, b = a[ok], b[ok]
    if np.ptp(b) <= FLAT:
        return float("nan"), n, "the loudness is constant"
    if np.ptp(a) <= FLAT:
        return float("nan"), n, "the opening is constant"
    return float(np.corrcoef(a, b)[0, 1]), n, ""


def opening_loudness(opening: np.ndarray, loudness_db: np.ndarray, max_lag: int = MAX_LAG,
                     min_span: float = STILL_SPAN) -> OpeningLoudness:
    """Pearson r of a mouth-opening curve (T,) and a loudness curve (T,) (e.g. `loudness_envelope`),
    at lag 0 and at the best lag within +-`max_lag` frames (see the module doc for the convention).
    Non-finite entries (frames without a face) are left out of every pair. An opening whose 5-95
    percentile range is below `min_span` is a still mouth: r is NaN (0 turns this off)."""
    a, e = np.asarray(opening, np.float64), np.asarray(loudness_db, np.float64)
    if a.ndim != 1 or a.shape != e.shape:
        raise InputError(f"opening_loudness needs two (T,) curves of one length, got {a.shape} and {e.shape}")
    if max_lag < 0:
        raise InputError(f"max_lag must be >= 0, got {max_lag}")
    n, nan = a.size, float("nan")
    seen = a[np.isfinite(a)]
    span = float(np.percentile(seen, 95) - np.percentile(seen, 5)) if seen.size else nan
    if seen.size == 0 and n > 0:
        return OpeningLoudness(nan, nan, 0, 0, nan, (nan,) * (2 * max_lag + 1), "no face found in any frame")
    if seen.size >= MIN_FRAMES and span < min_span:
        frames = int((np.isfinite(a) & np.isfinite(e)).sum())
        return OpeningLoudness(nan, nan, 0, frames, span, (nan,) * (2 * max_lag + 1),
                               f"the mouth is still: its opening spans {span:.4f} < {min_span:g}")
    rs, zero = [], (nan, 0, "")
    for k in range(-max_lag, max_lag + 1):
        if abs(k) >= n:
            res = (nan, 0, f"{n} frames")
        elif k >= 0:  # opening[t] with loudness[t - k]
            res = _pearson(a[k:], e[: n - k])
        else:
            res = _pearson(a[: n + k], e[-k:])
        rs.append(res[0])
        if k == 0:
            zero = res
    order = sorted(range(-max_lag, max_lag + 1), key=lambda k: (abs(k), k))
    finite = [k for k in order if not math.isnan(rs[k + max_lag])]
    best = max(finite, key=lambda k: rs[k + max_lag]) if finite else 0  # max keeps the first of ties
    return OpeningLoudness(r=zero[0], best_r=rs[best + max_lag] if finite else nan, best_lag=best,
                           frames=zero[1], span=span, by_lag=tuple(rs),
                           reason=zero[2] or ("" if finite else "no lag measurable"))


def loudness_envelope(wav: np.ndarray, n_frames: int, fps: float = 25.0, sr: int = AUDIO_SR,
                      floor_db: float = FLOOR_DB) -> np.ndarray:
    """Audio (S,) at `sr` -> (n_frames,) float64 loudness per video frame, dB re full scale
    (`motion.corpus.frame_envelope`), floored at `floor_db` below its 95th percentile."""
    from erlnet.motion.corpus import frame_envelope

    env = frame_envelope(np.asarray(wav, np.float32), sr, n_frames, fps).astype(np.float64)
    if env.size and floor_db > 0:
        env = np.maximum(env, float(np.percentile(env, 95)) - floor_db)
    return env


def video_opening(video: str | Path, fps: float = 25.0, progress: bool = False) -> np.ndarray:
    """The mouth opening (T,) of every frame of `video` (decoded at `fps` by `io.video.iter_frames`),
    each frame tracked on its own (static-image MediaPipe); NaN where no face is found."""
    from erlnet.face.tracking import FaceTracker, TrackerConfig
    from erlnet.io.video import iter_frames
    from erlnet.progress import progress as bar

    out = []
    with FaceTracker(TrackerConfig(static_image=True, count_faces_every=0)) as tracker:
        for frame in bar(iter_frames(video, fps=fps), desc="mouth", unit="frame", enabled=progress):
            lms = tracker.process(frame).landmarks
            out.append(float("nan") if lms is None else float(tp.mouth_opening(lms)[0]))
    return np.asarray(out, np.float64)


def _speech(audio: str | Path | np.ndarray | None, video: Path) -> np.ndarray:
    from erlnet.io.audio import load_audio

    if isinstance(audio, np.ndarray):
        return audio
    wav = load_audio(video if audio is None else audio, sr=AUDIO_SR)
    if wav is None:
        raise InputError(f"{video if audio is None else audio}: no audio stream")
    return wav


def video_curves(video: str | Path, audio: str | Path | np.ndarray | None = None, fps: float = 25.0,
                 floor_db: float = FLOOR_DB, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(opening (T,), loudness dB (T,)) of a video's tracked mouth (`video_opening`) and its speech:
    `audio` is a file (any format `io.audio.load_audio` decodes), 16 kHz samples (S,), or None for
    the video's own audio track; sample 0 is the start of frame 0."""
    video = Path(video)
    opening = video_opening(video, fps, progress)
    return opening, loudness_envelope(_speech(audio, video), opening.size, fps, floor_db=floor_db)


def video_opening_loudness(video: str | Path, audio: str | Path | np.ndarray | None = None, fps: float = 25.0,
                           max_lag: int = MAX_LAG, floor_db: float = FLOOR_DB,
                           progress: bool = False) -> OpeningLoudness:
    """`opening_loudness` of a video's tracked mouth and its speech (see `video_curves`)."""
    return opening_loudness(*video_curves(video, audio, fps, floor_db, progress), max_lag)


def subject_curves(subject: Any, frames: np.ndarray | None = None,
                   floor_db: float = FLOOR_DB) -> tuple[np.ndarray, np.ndarray]:
    """(opening (T,), loudness dB (T,)) of a preprocessed subject's own mouth: the landmarks of its
    tracking.npz (frames not tracked, `valid` False, are NaN) and its audio.wav. `subject`: an
    `io.subject.Subject` or its directory; `frames`: contiguous frame indices (default all)."""
    from erlnet.io.audio import load_audio
    from erlnet.io.subject import Subject

    s = subject if isinstance(subject, Subject) else Subject(subject)
    tr = s.tracking()
    idx = np.arange(len(s)) if frames is None else np.asarray(frames, np.int64)
    if idx.ndim != 1 or idx.size == 0 or np.any(np.diff(idx) != 1) or idx[0] < 0 or idx[-1] >= len(s):
        raise InputError(f"{s.root}: frames must be contiguous indices in 0..{len(s) - 1}")
    opening = tp.mouth_opening(tr["landmarks"][idx]).astype(np.float64)
    if "valid" in tr:
        opening[~np.asarray(tr["valid"], bool)[idx]] = np.nan
    path = s.root / "audio.wav"
    wav = load_audio(path, sr=AUDIO_SR) if path.exists() else None
    if wav is None:
        raise InputError(f"{s.root}: no audio.wav")
    a = int(round(idx[0] / s.fps * AUDIO_SR))
    return opening, loudness_envelope(wav[a:], idx.size, s.fps, floor_db=floor_db)


def subject_opening_loudness(subject: Any, frames: np.ndarray | None = None, max_lag: int = MAX_LAG,
                             floor_db: float = FLOOR_DB) -> OpeningLoudness:
    """`opening_loudness` of a preprocessed subject's own mouth and audio (see `subject_curves`);
    no re-tracking."""
    return opening_loudness(*subject_curves(subject, frames, floor_db), max_lag)
