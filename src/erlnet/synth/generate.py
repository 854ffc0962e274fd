"""Synthetic talking-head clips with exact ground truth: `generate(SynthConfig(...), out_dir)`.

Writes to out_dir:
  video.mp4   H.264 + AAC, size x size, fps frames/s, frames streamed as they are rendered
  audio.wav   the speech, 16 kHz mono 16-bit
  truth.npz   per-frame head pose, expression and landmarks (keys in TRUTH_KEYS)
  config.json the SynthConfig, the style's numbers, the speech source, the intrinsics
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import erlnet
from erlnet.errors import InputError
from erlnet.face.pose import matrix_from_euler
from erlnet.synth.face import MOUTH_GAP_PER_UNIT, Expression, project
from erlnet.synth.motion import frame_times, sample_blinks, sample_head_motion
from erlnet.synth.render import Renderer
from erlnet.synth.speech import SAMPLE_RATE, SPEECH_SOURCES, Speech, fit_length, make_speech, mouth_drive
from erlnet.synth.styles import STYLES, Style, get_style

# Head rotations pivot about this canonical point (metres: below and behind the face, in the
# neck), so a nod also moves the face down and back as in real footage.
NECK_PIVOT_M = (0.0, 0.07, 0.07)
_CHUNK = 256  # frames per block of vectorised truth computation

TRUTH_KEYS = {
    "R": "(T, 3, 3) float32 head rotation, canonical -> camera (X_cam = R @ X_can + t)",
    "t": "(T, 3) float32 head translation, metres, camera axes (OpenCV: x right, y down, z forward)",
    "euler_deg": "(T, 3) float32 (pitch, yaw, roll) degrees, R = Rz(roll) Ry(yaw) Rx(pitch)",
    "pitch": "(T,) float32 degrees", "yaw": "(T,) float32 degrees", "roll": "(T,) float32 degrees",
    "blink": "(T,) float32 lid closure, 0 open .. 1 both lids shut",
    "mouth_open": "(T,) float32 style-scaled opening: inner-lip gap 13-14 = mouth_open * mouth_gap_per_unit_m",
    "mouth_width": "(T,) float32 style-scaled lip spread (+) / rounding (-)",
    "mouth_open_raw": "(T,) float32 the audio-driven opening before the style's mouth_amplitude",
    "mouth_width_raw": "(T,) float32 the audio-driven width before the style's width_amplitude",
    "landmarks_2d": "(T, 478, 2) float32 pixels (perspective projection with K)",
    "landmarks_3d": "(T, 478, 3) float32 camera-space landmarks, metres",
    "landmarks_px": "(T, 478, 3) float32 tracker convention: x, y pixels, z = f (Z - t_z) / t_z",
    "canonical": "(478, 3) float32 rest landmarks in the canonical head frame, metres",
    "K": "(3, 3) float32 intrinsics (f = 2 size, cx = cy = size / 2)",
    "fps": "() float32 frames per second",
    "times": "(T,) float32 centre time of each frame, (i + 0.5) / fps seconds",
}


@dataclass
class SynthConfig:
    """A synthetic talking-head clip."""

    # Clip length. None: the whole audio file when one is given, else 10 s. With a file, a value
    # trims the clip to at most that long.
    seconds: float | None = None
    size: int = 256  # output width and height, pixels (even, 64..2048)
    fps: int = 25  # frames per second
    style: str = "neutral"  # neutral, expressive, subdued, nodding, still, happy, surprised or angry
    seed: int = 0  # seeds head motion, blinks and the built-in speech (same seed -> same clip)
    audio: Path | None = None  # speech file (any format PyAV decodes); None: text-to-speech or built-in
    speech: str = "auto"  # "auto" (file, else TTS if installed, else built-in), "file", "tts", "builtin"
    text: str | None = None  # what the TTS program says; None: a built-in paragraph

    def validate(self) -> None:
        """Raise InputError for values that cannot make a clip."""
        if self.seconds is not None and not (
            isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0
        ):
            raise InputError(f"seconds must be a positive number, got {self.seconds!r}")
        if not isinstance(self.size, int) or self.size % 2 or not 64 <= self.size <= 2048:
            raise InputError(f"size must be an even integer in [64, 2048], got {self.size!r}")
        if not isinstance(self.fps, int) or not 1 <= self.fps <= 120:
            raise InputError(f"fps must be an integer in [1, 120], got {self.fps!r}")
        if self.seconds is not None and self.seconds * self.fps < 1:
            raise InputError(f"{self.seconds} s at {self.fps} frames/s is less than one frame")
        get_style(self.style)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.speech not in SPEECH_SOURCES:
            raise InputError(f"speech must be one of {', '.join(SPEECH_SOURCES)}, got {self.speech!r}")
        if self.audio is not None and self.speech not in ("auto", "file"):
            raise InputError(f"an audio file was given but speech={self.speech!r}; use 'auto' or 'file'")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["audio"] = None if self.audio is None else str(self.audio)
        return d


@dataclass(frozen=True)
class SynthResult:
    """Files written by `generate`, and what it took."""

    out_dir: Path
    video: Path
    audio: Path
    truth: Path
    config: Path
    n_frames: int
    speech_source: str
    render_fps: float  # frames rendered and encoded per second of wall time


@dataclass(frozen=True)
class Script:
    """Everything about a clip except pixels and landmarks: per-frame parameters (O(T) scalars)."""

    speech: Speech
    style: Style
    n_frames: int
    fps: int
    R: np.ndarray  # (T, 3, 3) float64
    t: np.ndarray  # (T, 3) float64
    euler_deg: np.ndarray  # (T, 3) (pitch, yaw, roll)
    blink: np.ndarray  # (T,)
    open_raw: np.ndarray  # (T,)
    width_raw: np.ndarray  # (T,)

    def expression(self, start: int = 0, stop: int | None = None) -> Expression:
        """Expression of frames [start, stop) as (T',) arrays."""
        sl = slice(start, self.n_frames if stop is None else stop)
        s = self.style
        return Expression(
            open=s.mouth_amplitude * self.open_raw[sl],
            width=s.width_amplitude * self.width_raw[sl],
            blink=self.blink[sl],
            smile=s.smile,
            brow_raise=s.brow_raise,
            frown=s.frown,
            eye_open=s.eye_open,
        )

    def frame_expression(self, i: int) -> Expression:
        """Expression of frame i as scalars."""
        e = self.expression(i, i + 1)
        return Expression(**{k: float(np.asarray(v).reshape(-1)[0]) for k, v in e.__dict__.items()})


def make_script(config: SynthConfig, t0: np.ndarray) -> Script:
    """Speech, mouth drive, head motion and blinks of a clip; t0 (3,) the photo's head translation."""
    config.validate()
    style = get_style(config.style)
    speech_rng, head_rng, blink_rng = np.random.default_rng(config.seed).spawn(3)
    speech = make_speech(config.seconds, speech_rng, config.speech, config.audio, config.text)
    n_frames = math.floor(speech.wav.size / speech.sr * config.fps + 1e-6)
    if n_frames < 1:
        raise InputError(f"speech of {speech.wav.size / speech.sr:.3f} s is shorter than one frame")
    wav = fit_length(speech.wav, round(n_frames / config.fps * speech.sr))
    speech = Speech(wav=wav, sr=speech.sr, source=speech.source)
    drive = mouth_drive(wav, speech.sr, config.fps, n_frames)
    head = sample_head_motion(n_frames, config.fps, style, drive.loudness, head_rng)
    blink, _ = sample_blinks(n_frames, config.fps, style, blink_rng)
    R = matrix_from_euler(head.euler_deg, degrees=True)
    pivot = np.asarray(NECK_PIVOT_M)
    t = t0[None] + head.translation_m + pivot[None] - R @ pivot
    return Script(
        speech=speech, style=style, n_frames=n_frames, fps=config.fps, R=R, t=t,
        euler_deg=head.euler_deg, blink=blink, open_raw=drive.open.astype(np.float64),
        width_raw=drive.width.astype(np.float64),
    )


class Synthesizer:
    """A clip being made: its script (all parameters) and the renderer. Frames are rendered on demand."""

    def __init__(self, config: SynthConfig):
        config.validate()
        self.config = config
        self.renderer = Renderer(config.size)
        self.script = make_script(config, self.renderer.head.t0)

    @property
    def n_frames(self) -> int:
        return self.script.n_frames

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame i -> (image (S, S, 3) uint8 RGB, landmarks (478, 3) float64 camera metres)."""
        s = self.script
        expr = s.frame_expression(i)
        geometry = self.renderer.frame_geometry(s.R[i], s.t[i], expr)
        return self.renderer.draw(geometry, float(expr.blink)), geometry.landmarks_cam

    def frames(self) -> Iterator[np.ndarray]:
        """All frames in order, (S, S, 3) uint8 RGB, one at a time."""
        for i in range(self.n_frames):
            yield self.frame(i)[0]

    def landmarks_cam(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Camera-space landmarks of frames [start, stop) -> (T', 478, 3) float64 metres (no rendering)."""
        stop = self.n_frames if stop is None else stop
        s = self.script
        return self.renderer.landmarks_cam(s.R[start:stop], s.t[start:stop], s.expression(start, stop))


def _landmark_views(cam: np.ndarray, t: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) camera points, (T, 3) head translations -> (2D (T, 478, 2), tracker-style (T, 478, 3))."""
    px = project(cam, K)
    tz = t[:, 2][:, None]
    z = K[0, 0] * (cam[..., 2] - tz) / tz
    return px, np.concatenate([px, z[..., None]], axis=-1)


def generate(config: SynthConfig, out_dir: str | Path, progress: bool = True) -> SynthResult:
    """Render a clip into out_dir (created): video.mp4, audio.wav, truth.npz, config.json.

    Memory stays bounded for any length: frames are encoded as they are rendered and per-landmark
    truth goes through memory-mapped scratch files. Shows a tqdm bar over frames when progress.
    """
    from tqdm import tqdm

    from erlnet.io.audio import save_wav
    from erlnet.io.video import VideoWriter

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    synth = Synthesizer(config)
    s, r = synth.script, synth.renderer
    n = s.n_frames
    paths = {k: out / name for k, name in
             (("video", "video.mp4"), ("audio", "audio.wav"), ("truth", "truth.npz"), ("config", "config.json"))}
    save_wav(paths["audio"], s.speech.wav, s.speech.sr)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=".truth-") as scratch:
        big = {
            "landmarks_3d": np.lib.format.open_memmap(Path(scratch) / "l3.npy", "w+", np.float32, (n, 478, 3)),
            "landmarks_2d": np.lib.format.open_memmap(Path(scratch) / "l2.npy", "w+", np.float32, (n, 478, 2)),
            "landmarks_px": np.lib.format.open_memmap(Path(scratch) / "lp.npy", "w+", np.float32, (n, 478, 3)),
        }
        writer = VideoWriter(paths["video"], fps=config.fps, size=(config.size, config.size),
                             audio=s.speech.wav, sample_rate=s.speech.sr)
        try:
            with tqdm(total=n, disable=not progress, unit="frame", desc="synth") as bar:
                for i in range(n):
                    frame, cam = synth.frame(i)
                    writer.write(frame)
                    px, tracker = _landmark_views(cam[None], s.t[i : i + 1], r.K)
                    big["landmarks_3d"][i] = cam
                    big["landmarks_2d"][i] = px[0]
                    big["landmarks_px"][i] = tracker[0]
                    bar.update(1)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        elapsed = time.perf_counter() - start
        _save_truth(paths["truth"], s, r, big)
        big.clear()  # drop the memory maps before their directory is removed
    _save_config(paths["config"], config, s, r)
    return SynthResult(
        out_dir=out, video=paths["video"], audio=paths["audio"], truth=paths["truth"], config=paths["config"],
        n_frames=n, speech_source=s.speech.source, render_fps=n / max(elapsed, 1e-9),
    )


def _save_truth(path: Path, s: Script, r: Renderer, big: dict[str, np.ndarray]) -> None:
    e = s.expression()
    f32 = np.float32
    arrays = {
        "R": s.R.astype(f32),
        "t": s.t.astype(f32),
        "euler_deg": s.euler_deg.astype(f32),
        "pitch": s.euler_deg[:, 0].astype(f32),
        "yaw": s.euler_deg[:, 1].astype(f32),
        "roll": s.euler_deg[:, 2].astype(f32),
        "blink": s.blink.astype(f32),
        "mouth_open": np.asarray(e.open, f32),
        "mouth_width": np.asarray(e.width, f32),
        "mouth_open_raw": s.open_raw.astype(f32),
        "mouth_width_raw": s.width_raw.astype(f32),
        **big,
        "canonical": r.head.canonical.astype(f32),
        "K": r.K.astype(f32),
        "fps": np.float32(s.fps),
        "times": frame_times(s.n_frames, s.fps).astype(f32),
    }
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def _save_config(path: Path, config: SynthConfig, s: Script, r: Renderer) -> None:
    doc = {
        "erlnet_version": erlnet.__version__,
        "config": config.to_dict(),
        "style": s.style.to_dict(),
        "styles_available": list(STYLES),
        "seed": config.seed,
        "speech_source": s.speech.source,
        "sample_rate": SAMPLE_RATE,
        "n_frames": s.n_frames,
        "fps": s.fps,
        "size": config.size,
        "K": r.K.tolist(),
        "mouth_gap_per_unit_m": MOUTH_GAP_PER_UNIT,
        "photo_mouth_open": r.model.open0,
        "neck_pivot_m": list(NECK_PIVOT_M),
        "appearance": "skimage.data.astronaut(): NASA portrait of Eileen Collins, public domain",
        "truth_keys": TRUTH_KEYS,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
