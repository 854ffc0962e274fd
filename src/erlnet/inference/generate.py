"""`erlnet generate`: speech + a style clip + a trained avatar -> a talking-head mp4 with the speech.

    result = generate(GenerateConfig(avatar="avatar/", model="motion-model/", style="style.mp4",
                                     audio="speech.wav", output="out.mp4"))

Stages: speech (a file, or `text` spoken by a local TTS program), style tracking (a video is
tracked once, a subject directory is read), the motion model (`animate`), then the renderer
(`render_motion`), whose frames are encoded as they are rendered: memory stays bounded by a render
batch plus the motion arrays (~6 KB a frame), whatever the length of the speech.

Head pose: the motion is generated relative to the style clip's mean pose and re-attached to the
mean pose of `subject` (by default the avatar's training subject when it is still on disk), else to
the avatar's reference pose, so the head stays where the renderer was trained to draw it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from erlnet.errors import InputError
from erlnet.inference.animate import (
    AUDIO_SR,
    AnimateConfig,
    MotionModel,
    animate,
    check_speech,
    cpu_threads,
    load_motion_model,
    load_speech,
    load_style,
    mean_pose,
    retarget_pose,
)
from erlnet.inference.render_video import render_motion
from erlnet.render.avatar import Avatar, load_avatar
from erlnet.types import Motion

log = logging.getLogger(__name__)

TTS_HINT = ("install espeak-ng (`apt install espeak-ng` on Debian/Ubuntu, `brew install espeak-ng` on macOS) "
            "or flite, or give a recording with --audio")


@dataclass
class GenerateConfig:
    """Settings of `erlnet generate` (paths, and how motion and frames are made)."""

    avatar: Path  # trained avatar directory (`erlnet train-avatar`)
    model: Path  # motion-model directory (`erlnet train-motion`)
    style: Path  # style clip: a video of someone talking, or a preprocessed subject directory
    output: Path  # video to write (.mp4)
    audio: Path | None = None  # speech: wav, mp3, flac or a video with sound (or give `text`)
    text: str | None = None  # text spoken by a local TTS program (espeak-ng, espeak or flite) instead of `audio`
    subject: Path | None = None  # subject whose mean head pose the motion is attached to (default: the avatar's own, if on disk)
    motion_output: Path | None = None  # also write the generated motion here (.npz)
    style_cache: Path | None = None  # keep the tracking of a style video in this directory (reused next time)
    animate: AnimateConfig = field(default_factory=AnimateConfig)  # motion-model settings (emotion, pose, seed, ...)
    batch_size: int = 4  # frames rendered at once (memory vs speed)
    render_device: str = "auto"  # renderer device: "auto" (CUDA when present, else CPU), "cpu", "cuda:1", ...
    render_threads: int = 0  # torch CPU threads while rendering (0 = torch's default)


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote and how long each stage took (wall seconds)."""

    video: Path
    frames: int
    fps: float
    audio_seconds: float  # length of the speech (the video's audio track)
    speech_source: str  # "file:<path>" or "tts:<program>"
    style_seconds: float  # reading / tracking the style clip
    motion_seconds: float  # speech features + the motion model
    render_seconds: float  # rendering + encoding

    @property
    def compute_per_audio_second(self) -> float:
        """Seconds of compute (style + motion + render) per second of speech; <= 1 is real time."""
        return (self.style_seconds + self.motion_seconds + self.render_seconds) / max(self.audio_seconds, 1e-9)


def speak(text: str) -> tuple[np.ndarray, str]:
    """Speak `text` with the first local TTS program found -> ((S,) float32 at 16 kHz, program name).

    InputError (saying how to install one) when none is on PATH, or when it fails.
    """
    from erlnet.io.audio import load_audio
    from erlnet.synth.speech import tts_argv, tts_programs

    if not text.strip():
        raise InputError("--text is empty")
    programs = tts_programs()
    if not programs:
        raise InputError(f"--text needs a text-to-speech program and none was found on PATH: {TTS_HINT}")
    program = programs[0]
    exe = shutil.which(program) or program
    with tempfile.TemporaryDirectory(prefix="erlnet-tts-") as tmp:
        out = Path(tmp) / "speech.wav"
        try:
            subprocess.run(tts_argv(program, exe, text, out), check=True, capture_output=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise InputError(f"text-to-speech with {program} failed ({exc})") from None
        wav = load_audio(out, sr=AUDIO_SR) if out.exists() and out.stat().st_size > 0 else None
    if wav is None:
        raise InputError(f"text-to-speech with {program} wrote no audio")
    return wav, program


def _speech(cfg: GenerateConfig, fps: float) -> tuple[np.ndarray, str]:
    if (cfg.audio is None) == (cfg.text is None):
        raise InputError("give exactly one of --audio (a speech recording) and --text (spoken by a local TTS)")
    if cfg.audio is not None:
        if not Path(cfg.audio).exists():
            raise InputError(f"{cfg.audio}: no such audio file")
        return load_speech(cfg.audio, fps), f"file:{cfg.audio}"
    wav, program = speak(cfg.text or "")
    return check_speech(wav, fps, f"speech of {program}"), f"tts:{program}"


def _check_paths(cfg: GenerateConfig) -> None:
    """Cheap checks before any loading or tracking."""
    if Path(cfg.output).suffix.lower() != ".mp4":
        raise InputError(f"{cfg.output}: the output must be an .mp4 file")
    if not Path(cfg.avatar).is_dir():
        raise InputError(f"{cfg.avatar}: no such avatar directory (train one with `erlnet train-avatar`)")
    if not Path(cfg.model).is_dir():
        raise InputError(f"{cfg.model}: no such motion-model directory (train one with `erlnet train-motion`)")
    if not Path(cfg.style).exists():
        raise InputError(f"{cfg.style}: no such style clip")
    if cfg.subject is not None and not (Path(cfg.subject) / "manifest.json").is_file():
        raise InputError(f"{cfg.subject}: not a preprocessed subject directory")
    if cfg.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {cfg.batch_size}")


def check_compatible(avatar: Avatar, mm: MotionModel) -> None:
    """InputError when the motion model's expressions cannot drive the avatar."""
    rep = mm.representation.setup()
    if rep.name != avatar.meta.representation or rep.dim != avatar.meta.expression_dim:
        raise InputError(f"the motion model makes {rep.name!r} expressions of {rep.dim} values, the avatar expects "
                         f"{avatar.meta.representation!r} with {avatar.meta.expression_dim} (another representation)")
    if abs(mm.fps - avatar.meta.fps) > 1e-6:
        log.warning("the motion model runs at %g frames/s, the avatar was trained at %g", mm.fps, avatar.meta.fps)


def pose_subject(cfg_subject: Path | None, avatar: Avatar) -> Path | None:
    """The subject whose mean pose the head is attached to: the one given, else the avatar's training
    subject when that directory still exists, else None (use the avatar's reference pose)."""
    if cfg_subject is not None:
        return Path(cfg_subject)
    src = avatar.meta.source.get("subject")
    if src and (Path(src) / "manifest.json").is_file():
        return Path(src)
    return None


def generate(config: GenerateConfig, progress: bool = False) -> GenerateResult:
    """Speech + style clip + avatar -> `config.output` (H.264 + AAC). See the module doc."""
    cfg = config
    _check_paths(cfg)
    dev = None if cfg.render_device == "auto" else cfg.render_device
    avatar = load_avatar(cfg.avatar, device=dev)
    mm = load_motion_model(cfg.model, cfg.animate.device)
    check_compatible(avatar, mm)
    wav, source = _speech(cfg, mm.fps)

    t0 = time.perf_counter()
    style = load_style(cfg.style, mm.fps, mm.representation, cfg.animate.style_size, cfg.style_cache,
                       cfg.animate.style_neutral)
    t1 = time.perf_counter()
    subject = pose_subject(cfg.subject, avatar)
    motion = animate(wav, style, mm, subject=subject, config=cfg.animate)
    if subject is None:  # no subject on disk: attach the head to the avatar's reference pose
        rot, trans = retarget_pose(motion.rotation, motion.translation, mean_pose(style.rotation, style.translation),
                                   (avatar.meta.ref_rotation, avatar.meta.ref_translation))
        motion = Motion(motion.expression, motion.blink, rot, trans, motion.fps, motion.representation)
    t2 = time.perf_counter()
    if cfg.motion_output is not None:
        Path(cfg.motion_output).parent.mkdir(parents=True, exist_ok=True)
        motion.save(cfg.motion_output)
    with cpu_threads(cfg.render_threads):
        render_motion(avatar, motion, cfg.output, audio=wav, batch_size=cfg.batch_size, progress=progress)
    t3 = time.perf_counter()
    return GenerateResult(video=Path(cfg.output), frames=len(motion), fps=motion.fps, audio_seconds=wav.size / AUDIO_SR,
                          speech_source=source, style_seconds=t1 - t0, motion_seconds=t2 - t1,
                          render_seconds=t3 - t2)
