"""The built-in demo (`erlnet demo`, `make demo`): runs on a fresh machine with no user files and no
downloads, in about 10 minutes on 2 CPU cores with the default budgets.

Stages, in order (each is skipped when it finished earlier with the same settings):

    subject  a synthetic talking clip of the avatar's person, preprocessed into a subject directory
    avatar   a DBF-NeRF avatar trained on the subject's training part for `avatar_minutes`
    corpus   a motion corpus of synthetic clips, one per speaking style in `corpus_styles`
    motion   an ADF motion model trained on the corpus for `motion_minutes`
    inputs   built-in speech (a new seed) and one synthetic style clip per style in `video_styles`
    videos   one talking-head video per style clip: speech + style -> motion model -> avatar
    talking  whether the videos talk: the correlation of each video's mouth opening (tracked with
             MediaPipe) with the loudness of its speech, and of the subject's real frames with theirs
             (the reference the videos should reach; `eval.talking`)
    report   the avatar's evaluation on the subject's held-out frames and a sample of its training frames
             (HTML report; the summary shows the held-out mouth opening correlation and amplitude ratio)

Output directory:

```
OUT/
  demo.json               per stage: settings key, finished or not, wall seconds, a few numbers
  subject_clip/           the synthetic clip (video.mp4, audio.wav, truth.npz, config.json)
  subject/                its preprocessed subject directory
  avatar/                 the avatar (bundle, checkpoints/, previews/, logs/)
  corpus/                 the motion corpus (its synthetic clips in corpus/synth/)
  motion_model/           the motion model (bundle, stage1/, stage2/)
  inputs/speech.wav       the speech of the videos
  inputs/styles/STYLE/    a style clip (video.mp4, ...), its tracking cached in tracking/
  videos/STYLE.mp4        the talking-head videos
  talking.json            per video and for the subject: opening-loudness correlation, per-frame curves
  report/index.html       the evaluation report (side_by_side.mp4, plots, metrics.json)
```

A stage that was interrupted is redone from the start, except the generating stages (subject,
corpus, inputs) whose own steps resume. A stage runs again when its settings change or when a stage
it uses was trained again (see `StageBook`).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from erlnet.errors import InputError
from erlnet.io.subject import atomic_write_text, params_hash
from erlnet.motion.config import ADFConfig
from erlnet.render.dbf import DBFConfig
from erlnet.train.avatar import OptimConfig

log = logging.getLogger(__name__)

MANIFEST = "demo.json"
DEMO_VERSION = 1  # part of every stage key: raise it when a stage's outputs change meaning
STAGES = ("subject", "avatar", "corpus", "motion", "inputs", "videos", "talking", "report")
REPORT_VERSION = 2  # part of the report stage's key: raise it when the evaluation's metrics change (2: mouth dynamics)
TALKING_VERSION = 1  # part of the talking stage's key: raise it when its measurement changes
STAGE1_SHARE = 0.4  # share of the motion budget given to the VQ-VAEs (stage 2 steps cost ~3x more)
_MIN_MOTION_STEPS = 10
_CALIBRATION_STEPS = (2, 10)  # two short motion runs: their difference gives the seconds per step
# What an output directory of the first demo (synthetic clip + subject only) held.
_OLD_LAYOUT = frozenset({"synth", "subject"})


def demo_motion_model() -> ADFConfig:
    """The demo's motion model: the tiny test model with a 32-frame (1.3 s) window."""
    return replace(ADFConfig.tiny(), window=32, overlap=8)


@dataclass
class DemoConfig:
    """Settings of `erlnet demo` (budgets in minutes of wall time on the machine it runs on)."""

    seconds: float = 20.0  # length of the avatar subject's clip (its last 20% is held out for the report)
    style: str = "neutral"  # speaking style of the avatar subject's clip
    size: int = 256  # resolution of every clip, subject and avatar, pixels
    seed: int = 0  # seed of every synthetic clip and of the speech (same seed -> same inputs)
    avatar_minutes: float = 5.0  # avatar training time (the learning-rate schedule and phases span it; 0 = no limit)
    avatar_steps: int = 0  # also stop the avatar after this many steps (0 = time limit only)
    corpus_styles: tuple[str, ...] = ("neutral", "expressive", "subdued", "nodding", "happy")  # one corpus clip each
    corpus_seconds: float = 6.0  # length of each corpus clip
    motion_minutes: float = 3.0  # motion-model training time: steps are sized to it (0 = no limit)
    motion_steps: int = 0  # fixed steps per motion phase instead (0 = as many as fit motion_minutes)
    speech_seconds: float = 6.0  # length of the built-in speech of the videos
    video_styles: tuple[str, ...] = ("expressive", "subdued")  # one video per style, from a new clip of that style
    style_seconds: float = 4.0  # length of each style clip
    eval_frames: int = 0  # held-out frames scored in the report (0 = all)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    renderer: DBFConfig = field(default_factory=DBFConfig)  # the avatar's renderer (the defaults of train-avatar)
    avatar_optim: OptimConfig = field(default_factory=OptimConfig)  # the avatar's optimiser
    motion_model: ADFConfig = field(default_factory=demo_motion_model)  # the motion model (keep it small)

    def validate(self) -> None:
        """InputError for settings the demo cannot run with (clip settings are checked by the synthesiser)."""
        from erlnet.synth import get_style

        for name in (self.style, *self.corpus_styles, *self.video_styles):
            get_style(name)
        if not self.corpus_styles or not self.video_styles:
            raise InputError("corpus_styles and video_styles need at least one style each")
        if len(set(self.video_styles)) != len(self.video_styles):
            raise InputError(f"video_styles repeats a style: {', '.join(self.video_styles)}")
        for name, value in (("avatar_minutes", self.avatar_minutes), ("motion_minutes", self.motion_minutes),
                            ("avatar_steps", self.avatar_steps), ("motion_steps", self.motion_steps),
                            ("eval_frames", self.eval_frames), ("threads", self.threads)):
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be >= 0, got {value}")
        if self.avatar_minutes == 0 and self.avatar_steps == 0:
            raise InputError("give the avatar a budget: avatar_minutes > 0 or avatar_steps > 0")
        if self.motion_minutes == 0 and self.motion_steps == 0:
            raise InputError("give the motion model a budget: motion_minutes > 0 or motion_steps > 0")
        fps = self.motion_model.fps
        for name, seconds in (("corpus_seconds", self.corpus_seconds), ("style_seconds", self.style_seconds)):
            if seconds * fps < self.motion_model.min_style_frames:
                raise InputError(f"{name} must be at least {self.motion_model.min_style_frames / fps:g} s "
                                 f"(the motion model's shortest style clip), got {seconds}")
        if self.speech_seconds * fps < 1:
            raise InputError(f"speech_seconds must give at least one frame, got {self.speech_seconds}")


# ---------------------------------------------------------------- stage bookkeeping
@dataclass(frozen=True)
class StageRun:
    """One stage of a demo run."""

    name: str
    skipped: bool  # finished earlier with the same settings
    seconds: float  # wall time (of the earlier run when skipped)
    info: dict[str, Any]  # a few numbers (JSON)
    token: str  # identifies these outputs: stages that use them put it in their keys


class StageBook:
    """The stages of a demo directory, recorded in OUT/demo.json.

    A stage is skipped when it finished with the same key (a hash of its settings and of the tokens
    of the stages it uses) and its outputs exist. Otherwise its outputs are removed and it runs again.

    A `deterministic` stage makes the same outputs from the same key (synthetic clips, preprocessing):
    its token is its key, so remaking it leaves the stages that use it valid, and when it was
    interrupted its partial outputs are kept (its own steps are cached and resume). Other stages
    (training on a time budget) get a new random token per run, so whatever uses them runs again.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.stages = dict(json.loads(self.path.read_text())["stages"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("%s is unreadable: every stage runs again", self.path)

    def _save(self) -> None:
        doc = {"schema": "erlnet.demo", "version": DEMO_VERSION, "stages": self.stages}
        atomic_write_text(self.path, json.dumps(doc, indent=1, default=str) + "\n")

    def finished(self, name: str, key: str, outputs: Sequence[Path]) -> bool:
        e = self.stages.get(name)
        return bool(e) and e.get("key") == key and bool(e.get("done")) and all(p.exists() for p in outputs)

    def run(self, name: str, key: str, outputs: Sequence[Path], work: Callable[[], dict[str, Any]],
            deterministic: bool = False) -> StageRun:
        """Run `work` unless the stage is finished (see the class doc); returns what happened."""
        entry = self.stages.get(name)
        if self.finished(name, key, outputs):
            assert entry is not None
            return StageRun(name, True, float(entry.get("seconds", 0.0)), dict(entry.get("info", {})),
                            str(entry.get("token", key)))
        if not (deterministic and entry and entry.get("key") == key):
            for p in outputs:
                _remove(p)
        self.stages[name] = {"key": key, "done": False}
        self._save()
        t0 = time.perf_counter()
        info = work()
        seconds = time.perf_counter() - t0
        token = key if deterministic else secrets.token_hex(8)
        self.stages[name] = {"key": key, "done": True, "token": token, "seconds": round(seconds, 2), "info": info}
        self._save()
        return StageRun(name, False, seconds, info, token)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output_dir(out: Path) -> None:
    """InputError unless `out` is new, empty, a demo directory, or the first demo's output
    (synth/ + subject/, which is replaced). The demo removes only its own sub-directories, and only in
    a directory that holds its demo.json."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    names = {p.name for p in out.iterdir()}
    if not names or MANIFEST in names:
        return
    if names <= _OLD_LAYOUT and (out / "synth" / "truth.npz").is_file():
        for name in names:
            _remove(out / name)
        return
    raise InputError(f"{out}: exists and is not a demo directory (no {MANIFEST}); choose an empty or new directory")


def _key(*parts: Any) -> str:
    return params_hash([DEMO_VERSION, *parts])


def _numbers(d: dict[str, Any], keys: Sequence[str]) -> dict[str, float | int]:
    """The finite numbers among `keys` of d (JSON-safe; others, such as "not computed" notes, left out)."""
    out: dict[str, float | int] = {}
    for k in keys:
        v = d.get(k)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (float, np.floating)) and math.isfinite(float(v)):
            out[k] = round(float(v), 4)
    return out


# ---------------------------------------------------------------- the stages
def _subject(cfg: DemoConfig, clip: Path, subject: Path, show: bool) -> dict[str, Any]:
    from erlnet.io.subject import Subject
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
    from erlnet.synth import SynthConfig, generate

    if not (clip / "config.json").is_file():  # written last: a clip without it is incomplete
        _remove(clip)
        generate(SynthConfig(seconds=cfg.seconds, style=cfg.style, seed=cfg.seed, size=cfg.size), clip,
                 progress=show)
    results = run_preprocess(clip / "video.mp4", subject, PreprocessConfig(size=cfg.size), show_progress=show)
    track = next(r.info for r in results if r.name == "track")
    s = Subject(subject)
    split = {k: int(b - a) for k, (a, b) in s.manifest.split.items()}
    return {"frames": len(s), "split": split, "tracked_fraction": float(track.get("tracked_fraction", 1.0))}


def avatar_train_config(cfg: DemoConfig) -> Any:
    """The `AvatarTrainConfig` of the demo's avatar: time budget, one device, no periodic checkpoints."""
    from erlnet.train.data import DataConfig
    from erlnet.train.fit_avatar import AvatarTrainConfig
    from erlnet.train.trainer import TrainerConfig

    trainer = TrainerConfig(max_steps=cfg.avatar_steps or 10**9, max_minutes=cfg.avatar_minutes, devices="1",
                            log_every=25, preview_every=250, checkpoint_every=0, val_every=0, seed=cfg.seed)
    return AvatarTrainConfig(trainer=trainer, data=DataConfig(image_size=cfg.size), renderer=cfg.renderer,
                             optim=cfg.avatar_optim)


def _avatar(cfg: DemoConfig, subject: Path, avatar: Path, show: bool) -> dict[str, Any]:
    from erlnet.train.fit_avatar import train_avatar

    log.info("avatar: training for %s", _budget(cfg.avatar_minutes, cfg.avatar_steps))
    r = train_avatar(subject, avatar, avatar_train_config(cfg), progress=show)
    return {"steps": r.steps, **_numbers({"train_psnr": r.metrics.get("train/psnr")}, ["train_psnr"])}


def _corpus(cfg: DemoConfig, corpus: Path, show: bool) -> dict[str, Any]:
    from erlnet.motion.corpus import Corpus, CorpusConfig, build_corpus, corpus_summary, make_synth_clips

    made = make_synth_clips(corpus / "synth", list(cfg.corpus_styles), 1, cfg.corpus_seconds, cfg.size,
                            seed=cfg.seed + 100, show_progress=show)
    # One source per clip: sources of 2+ clips hold one out, and every style should train the model.
    report = build_corpus([f"demo-{p.name}={p}" for p in made], corpus, CorpusConfig(size=cfg.size),
                          show_progress=show)
    for f in report.failed:
        log.warning("corpus: left out %s: %s", f["video"], f["reason"])
    s = corpus_summary(Corpus(corpus))
    return {"clips": s["clips"], "minutes": s["minutes"], "failed": len(report.failed)}


def _motion_base(cfg: DemoConfig) -> Any:
    from erlnet.train.motion import MotionTrainConfig
    from erlnet.train.trainer import TrainerConfig

    trainer = TrainerConfig(devices="1", val_every=0, checkpoint_every=0, log_every=10, seed=cfg.seed)
    return MotionTrainConfig(regressor_steps=0, cpu_threads=cfg.threads, trainer=trainer, model=cfg.motion_model)


@dataclass(frozen=True)
class MotionTiming:
    """Measured cost of motion training: seconds per step and fixed seconds per phase, and the fixed
    seconds of one `train_motion` call outside its phases (corpus loading, statistics, export)."""

    per_step: dict[str, float]
    per_phase: dict[str, float]
    per_call: float

    def steps(self, phase: str, seconds: float) -> int:
        """Steps of `phase` that fit in `seconds` (at least a few)."""
        return max(_MIN_MOTION_STEPS, int((seconds - self.per_phase[phase]) / self.per_step[phase]))


def calibrate_motion(corpus: Path, work: Path, base: Any) -> MotionTiming:
    """Time two short runs of both motion phases (in `work`, removed after) -> `MotionTiming`."""
    from erlnet.train.motion import train_motion

    runs = {}
    with tempfile.TemporaryDirectory(dir=work, prefix=".motion-calibration-") as tmp:
        for n in _CALIBRATION_STEPS:
            t0 = time.perf_counter()
            r = train_motion(corpus, Path(tmp) / f"steps{n}", replace(base, stage1_steps=n, stage2_steps=n),
                             progress=False)
            runs[n] = (r.seconds, time.perf_counter() - t0)
    (a, (sa, _)), (b, (sb, total_b)) = sorted(runs.items())
    per_step, per_phase = {}, {}
    for p in ("stage1", "stage2"):
        # The difference cancels the fixed cost; the floor guards against a noisy, shared CPU.
        per_step[p] = max((sb[p] - sa[p]) / (b - a), 0.5 * sb[p] / b, 1e-3)
        per_phase[p] = max(0.0, sb[p] - b * per_step[p])
    return MotionTiming(per_step, per_phase, max(0.0, total_b - sum(sb.values())))


def _motion(cfg: DemoConfig, corpus: Path, model: Path, show: bool) -> dict[str, Any]:
    from erlnet.train.motion import train_motion

    base = _motion_base(cfg)
    log.info("motion: training for %s", _budget(cfg.motion_minutes, cfg.motion_steps))
    if cfg.motion_steps > 0:  # fixed steps; the time budget (if any) caps each phase at half of it
        run = replace(base, stage1_steps=cfg.motion_steps, stage2_steps=cfg.motion_steps,
                      trainer=replace(base.trainer, max_minutes=cfg.motion_minutes / 2))
        r = train_motion(corpus, model, run, progress=show)
        return {"steps": r.stages, "calibrated": False}
    # Time budget: the learning-rate schedules are step-based, so the steps are sized to the budget
    # from measured speeds; each phase is also capped in time in case the machine slows down.
    t0 = time.perf_counter()
    timing = calibrate_motion(corpus, model.parent, base)
    budget = 60.0 * cfg.motion_minutes

    def left() -> float:
        return budget - (time.perf_counter() - t0) - timing.per_call

    s1 = STAGE1_SHARE * (left() - timing.per_call)  # the stage-2 call has its fixed cost too
    steps1 = timing.steps("stage1", s1)
    log.info("motion: %.3f s/step (stage 1), %.3f s/step (stage 2); stage 1: %d steps",
             timing.per_step["stage1"], timing.per_step["stage2"], steps1)
    run1 = replace(base, stage1_steps=steps1, stage2_steps=0, trainer=replace(base.trainer, max_minutes=1.2 * s1 / 60))
    r1 = train_motion(corpus, model, run1, progress=show)
    # Stage 2 gets whatever is left, measured after stage 1 (which may have run faster or slower).
    s2 = max(left(), 0.0)
    steps2 = timing.steps("stage2", s2)
    log.info("motion: stage 2: %d steps", steps2)
    run2 = replace(base, stage1_steps=r1.stages["stage1"], stage2_steps=steps2,
                   trainer=replace(base.trainer, max_minutes=max(1.2 * s2, 30.0) / 60))
    r2 = train_motion(corpus, model, run2, resume=True, progress=show)
    return {"steps": r2.stages, "calibrated": True, "seconds_per_step": timing.per_step}


def _inputs(cfg: DemoConfig, inputs: Path, show: bool) -> dict[str, Any]:
    from erlnet.io.audio import save_wav
    from erlnet.synth import SynthConfig, generate, make_speech

    speech = make_speech(cfg.speech_seconds, np.random.default_rng(cfg.seed + 300), source="builtin")
    save_wav(inputs / "speech.wav", speech.wav, speech.sr)
    for k, style in enumerate(cfg.video_styles):
        d = inputs / "styles" / style
        if not (d / "config.json").is_file():
            _remove(d)
            generate(SynthConfig(seconds=cfg.style_seconds, style=style, seed=cfg.seed + 200 + k, size=cfg.size), d,
                     progress=show)
    return {"speech_seconds": round(speech.wav.size / speech.sr, 3)}


def _videos(cfg: DemoConfig, paths: DemoPaths, show: bool) -> dict[str, Any]:
    from erlnet.inference.animate import AnimateConfig
    from erlnet.inference.generate import GenerateConfig, generate

    info = {}
    paths.root.joinpath("videos").mkdir(parents=True, exist_ok=True)
    for style, video in paths.videos.items():
        d = paths.inputs / "styles" / style
        log.info("videos: %s", video)
        gen = GenerateConfig(avatar=paths.avatar, model=paths.motion_model, style=d / "video.mp4", output=video,
                             audio=paths.speech, subject=paths.subject, style_cache=d / "tracking",
                             animate=AnimateConfig(seed=cfg.seed), render_threads=cfg.threads)
        r = generate(gen, progress=show)
        info[style] = {"frames": r.frames, "audio_seconds": round(r.audio_seconds, 3),
                       "style_seconds": round(r.style_seconds, 2), "motion_seconds": round(r.motion_seconds, 2),
                       "render_seconds": round(r.render_seconds, 2),
                       "compute_per_audio_second": round(r.compute_per_audio_second, 3)}
    return info


def _talking(cfg: DemoConfig, paths: DemoPaths, show: bool) -> dict[str, Any]:
    """Opening-loudness correlation of each video (its mouth tracked, frame by frame, against the speech
    it was made from) and of the subject's real frames (its tracked landmarks and audio); the numbers
    go to demo.json, the numbers and per-frame curves to talking.json."""
    from erlnet.eval.talking import opening_loudness, subject_curves, video_curves

    def measure(opening: np.ndarray, loudness: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        d = opening_loudness(opening, loudness).to_dict()
        curves = {"opening": [None if not math.isfinite(v) else round(float(v), 5) for v in opening],
                  "loudness_db": [round(float(v), 2) for v in loudness]}
        return d, d | curves

    info: dict[str, Any] = {"videos": {}}
    doc: dict[str, Any] = {"videos": {}}
    for style, video in paths.videos.items():
        log.info("talking: %s", video)
        info["videos"][style], doc["videos"][style] = measure(*video_curves(video, paths.speech, progress=show))
    info["subject"], doc["subject"] = measure(*subject_curves(paths.subject))
    atomic_write_text(paths.talking, json.dumps(doc, indent=1) + "\n")
    return info


def _report(cfg: DemoConfig, avatar: Path, subject: Path, report: Path, show: bool) -> dict[str, Any]:
    from erlnet.eval.avatar import EvaluateConfig, evaluate_subject
    from erlnet.eval.report import write_report

    report.mkdir(parents=True, exist_ok=True)
    ev = evaluate_subject(avatar, subject, report, EvaluateConfig(max_frames=cfg.eval_frames,
                                                                  render_threads=cfg.threads), progress=show)
    write_report(ev, report)
    keys = ("frames", "psnr", "ssim", "cpbd_generated", "cpbd_truth", "mouth_lmd_px", "neck_l1", "pose_error_deg",
            "render_fps", "mouth_open_corr", "mouth_open_ratio", "mouth_psnr", "train_frames", "train_psnr",
            "train_mouth_open_corr", "train_mouth_open_ratio")
    return _numbers(ev.metrics, keys)


def _budget(minutes: float, steps: int) -> str:
    parts = ([f"{minutes:g} min"] if minutes > 0 else []) + ([f"{steps} steps"] if steps > 0 else [])
    return " or ".join(parts)


# ---------------------------------------------------------------- the run
@dataclass(frozen=True)
class DemoPaths:
    """Where a demo run writes (see the module doc)."""

    root: Path
    subject_clip: Path
    subject: Path
    avatar: Path
    corpus: Path
    motion_model: Path
    inputs: Path
    speech: Path
    videos: dict[str, Path]
    talking: Path
    report_dir: Path
    report: Path

    @classmethod
    def of(cls, out: str | Path, video_styles: Sequence[str]) -> DemoPaths:
        r = Path(out)
        return cls(root=r, subject_clip=r / "subject_clip", subject=r / "subject", avatar=r / "avatar",
                   corpus=r / "corpus", motion_model=r / "motion_model", inputs=r / "inputs",
                   speech=r / "inputs" / "speech.wav", videos={s: r / "videos" / f"{s}.mp4" for s in video_styles},
                   talking=r / "talking.json", report_dir=r / "report", report=r / "report" / "index.html")


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` made: the paths, and per stage its wall time and numbers."""

    paths: DemoPaths
    stages: dict[str, StageRun]

    @property
    def seconds(self) -> float:
        """Wall seconds of the stages run now (skipped ones excluded)."""
        return sum(s.seconds for s in self.stages.values() if not s.skipped)


# (name, key from the runs so far, outputs, work, deterministic)
_Planned = tuple[str, Callable[[dict[str, StageRun]], str], list[Path], Callable[[], dict[str, Any]], bool]


def run_demo(out: str | Path, config: DemoConfig | None = None, show_progress: bool = True) -> DemoResult:
    """Run (or finish) the demo in `out`: every stage of the module doc, skipping finished ones."""
    from erlnet.inference.animate import cpu_threads

    cfg = config or DemoConfig()
    cfg.validate()
    p = DemoPaths.of(out, cfg.video_styles)
    check_output_dir(p.root)
    p.root.mkdir(parents=True, exist_ok=True)
    book = StageBook(p.root)
    show = show_progress
    # Keys: the stage's settings and the tokens of the stages it uses (see StageBook).
    plan: list[_Planned] = [
        ("subject", lambda r: _key("subject", cfg.seconds, cfg.style, cfg.size, cfg.seed),
         [p.subject_clip, p.subject], lambda: _subject(cfg, p.subject_clip, p.subject, show), True),
        ("avatar", lambda r: _key("avatar", r["subject"].token, cfg.avatar_minutes, cfg.avatar_steps,
                                  cfg.renderer.to_dict(), asdict(cfg.avatar_optim)),
         [p.avatar], lambda: _avatar(cfg, p.subject, p.avatar, show), False),
        ("corpus", lambda r: _key("corpus", list(cfg.corpus_styles), cfg.corpus_seconds, cfg.size, cfg.seed),
         [p.corpus], lambda: _corpus(cfg, p.corpus, show), True),
        ("motion", lambda r: _key("motion", r["corpus"].token, cfg.motion_minutes, cfg.motion_steps,
                                  cfg.motion_model.to_dict()),
         [p.motion_model], lambda: _motion(cfg, p.corpus, p.motion_model, show), False),
        ("inputs", lambda r: _key("inputs", cfg.speech_seconds, list(cfg.video_styles), cfg.style_seconds, cfg.size,
                                  cfg.seed),
         [p.inputs], lambda: _inputs(cfg, p.inputs, show), True),
        ("videos", lambda r: _key("videos", r["avatar"].token, r["motion"].token, r["inputs"].token, cfg.seed),
         [p.root / "videos"], lambda: _videos(cfg, p, show), False),
        ("talking", lambda r: _key("talking", r["videos"].token, r["subject"].token, TALKING_VERSION),
         [p.talking], lambda: _talking(cfg, p, show), False),
        ("report", lambda r: _key("report", r["avatar"].token, cfg.eval_frames, REPORT_VERSION),
         [p.report_dir], lambda: _report(cfg, p.avatar, p.subject, p.report_dir, show), False),
    ]
    for path in p.root.glob(".motion-calibration-*"):  # left by an interrupted run
        _remove(path)
    runs: dict[str, StageRun] = {}
    with cpu_threads(cfg.threads):
        for i, (name, key_of, outputs, work, deterministic) in enumerate(plan, 1):
            key = key_of(runs)
            if book.finished(name, key, outputs):
                log.info("[%d/%d] %s: up to date, skipped", i, len(plan), name)
            else:
                log.info("[%d/%d] %s ...", i, len(plan), name)
            runs[name] = book.run(name, key, outputs, work, deterministic)
            if not runs[name].skipped:
                log.info("[%d/%d] %s: done in %.1f s", i, len(plan), name, runs[name].seconds)
    return DemoResult(p, runs)


def format_summary(result: DemoResult) -> str:
    """Paths and a few numbers of a demo run, for people (several lines)."""
    p, st = result.paths, result.stages

    def when(name: str) -> str:
        s = st[name]
        return f"{name} {s.seconds:.0f} s" + (" (earlier run)" if s.skipped else "")

    av, mo, rep = st["avatar"].info, st["motion"].info, st["report"].info
    ran = [n for n in STAGES if not st[n].skipped]
    head = f"{result.seconds / 60:.1f} min" if ran else "every stage up to date"
    lines = [f"demo in {p.root}: {head} ({', '.join(when(n) for n in STAGES)})"]
    for style, video in p.videos.items():
        v = st["videos"].info.get(style, {})
        lines.append(f"  video ({style:>10}) : {video}  ({v.get('frames', '?')} frames, {v.get('audio_seconds', '?')} s "
                     f"of built-in speech; style tracking {v.get('style_seconds', '?')} s + motion "
                     f"{v.get('motion_seconds', '?')} s + rendering {v.get('render_seconds', '?')} s = "
                     f"{v.get('compute_per_audio_second', '?')} s of compute per s of audio)")
    talk = st["talking"].info
    for style in p.videos:
        lines.append(f"  mouth ({style:>10}) : {_talk(talk.get('videos', {}).get(style))}")
    lines.append(f"  mouth (   subject) : {_talk(talk.get('subject'))} of the subject's real frames "
                 f"(the reference: a video that talks reaches it)")
    lines.append(f"  report             : {p.report}  ({_fmt(rep, 'psnr', 'PSNR', ' dB', '.2f')}, "
                 f"{_fmt(rep, 'ssim', 'SSIM', '', '.3f')}, {_fmt(rep, 'mouth_lmd_px', 'mouth LMD', ' px', '.2f')}, "
                 f"{_fmt(rep, 'mouth_open_corr', 'mouth opening correlation', '', '.2f')}, "
                 f"{_fmt(rep, 'mouth_open_ratio', 'amplitude ratio', '', '.2f')} "
                 f"on {rep.get('frames', '?')} held-out frames)")
    lines.append(f"  avatar             : {p.avatar}  ({av.get('steps', '?')} steps, "
                 f"{_fmt(av, 'train_psnr', 'train PSNR', ' dB', '.2f')})")
    steps = mo.get("steps", {})
    lines.append(f"  motion model       : {p.motion_model}  (stage 1 {steps.get('stage1', '?')} steps, "
                 f"stage 2 {steps.get('stage2', '?')} steps)")
    lines.append(f"  subject            : {p.subject}  (style clips and speech in {p.inputs})")
    return "\n".join(lines)


def _talk(d: dict[str, Any] | None) -> str:
    """A talking-stage entry: "opening-loudness correlation r (best r at lag k), opening range s, N frames"."""
    from erlnet.eval.talking import OpeningLoudness

    if not d:
        return "opening-loudness correlation n/a"
    c = OpeningLoudness.from_dict(d)
    span = "" if math.isnan(c.span) or math.isnan(c.best_r) else f", opening range {c.span:.3f}"
    return c.describe() + span + (f", {c.frames} frames" if c.frames else "")


def _fmt(d: dict[str, Any], key: str, label: str, unit: str, spec: str) -> str:
    v = d.get(key)
    return f"{label} {v:{spec}}{unit}" if isinstance(v, (int, float)) else f"{label} n/a"
