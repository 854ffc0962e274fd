"""The `erlnet` command. Each subcommand is a typed function; tyro builds the CLI from the
signatures and config dataclasses (so every nested config field is a flag, with its comment as help)."""

# No `from __future__ import annotations`: tyro reads the real types of the closures below.

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from erlnet.errors import ErlnetError

log = logging.getLogger("erlnet")


@dataclass(frozen=True)
class Verbosity:
    """Logging flags shared by all subcommands."""

    verbose: Annotated[bool, tyro.conf.arg(aliases=["-v"])] = False  # show debug messages
    quiet: Annotated[bool, tyro.conf.arg(aliases=["-q"])] = False  # only warnings and errors, no progress bars

    def apply(self) -> bool:
        """Configure logging; returns whether progress bars should be shown."""
        level = logging.DEBUG if self.verbose else logging.WARNING if self.quiet else logging.INFO
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        if not self.verbose:
            # Lightning sets its loggers to INFO when imported (device summaries, tips); its records
            # reach our handler by propagation, so filter them there: only warnings, unless -v.
            # (imported before this, they print through their own handlers: filter those too)
            for name in ("", "lightning.pytorch", "lightning.fabric"):
                for handler in logging.getLogger(name).handlers:
                    handler.addFilter(_quiet_lightning)
        return not self.quiet


def _quiet_lightning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith(("lightning", "pytorch_lightning"))


Out = Annotated[Path, tyro.conf.arg(aliases=["-o"], help="output directory or file")]
# Nested configs and logging flags without a prefix: `--size 256`, `--tracker.max-side 640`, `-q`.
Flat = tyro.conf.arg(name="")


def _preprocess_entry() -> Callable[..., None]:
    # The config's type is only known after importing the pipeline; keep `erlnet --help` fast otherwise.
    from erlnet.preprocess.pipeline import PreprocessConfig

    def run(
        video: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="VIDEO", help="video of one person talking")],
        output: Out,
        config: Annotated[PreprocessConfig, Flat] = PreprocessConfig(),  # noqa: B008 (tyro reads defaults)
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Preprocess a video of one person talking into a subject directory (resumable).

        Tracks the face (MediaPipe), smooths the tracks, solves head pose, computes expression and
        blink, writes crops, head/torso/background masks, a background plate, audio and its features.
        """
        from erlnet.preprocess.pipeline import run_preprocess

        show = log_flags.apply()
        results = run_preprocess(video, output, config, show_progress=show)
        for r in results:
            log.info("%-9s %s", r.name, "skipped (up to date)" if r.skipped else f"{r.seconds:.1f} s")
        track = next(r.info for r in results if r.name == "track")
        print(f"subject written to {output}: {track['n_frames']} frames, "
              f"{100 * track['tracked_fraction']:.1f}% tracked")

    return run


def _synth_entry() -> Callable[..., None]:
    from erlnet.synth import SynthConfig, generate

    def run(output: Out, config: Annotated[SynthConfig, Flat] = SynthConfig(), log_flags: Annotated[Verbosity, Flat] = Verbosity()) -> None:  # noqa: B008
        """Generate a synthetic talking subject with exact ground truth (video.mp4, truth.npz)."""
        show = log_flags.apply()
        result = generate(config, output, progress=show)
        print(f"synthetic subject written to {output}: {result.video.name} + {result.truth.name}")

    return run


def _demo_entry() -> Callable[..., None]:
    from erlnet.demo import DemoConfig, run_demo

    def run(output: Out = Path("out/demo"), config: Annotated[DemoConfig, Flat] = DemoConfig(), log_flags: Annotated[Verbosity, Flat] = Verbosity()) -> None:  # noqa: B008
        """Run the built-in demo (no user files, no downloads; about 10 minutes on 2 CPU cores).

        Makes a synthetic subject and trains a small avatar on it, trains a small motion model on
        synthetic clips in several styles, generates talking videos from built-in speech in two
        styles and writes the avatar's evaluation report. Rerunning skips the finished stages;
        shorter budgets: --avatar-minutes 1 --motion-minutes 1.
        """
        from erlnet.demo import format_summary

        show = log_flags.apply()
        if not log_flags.verbose:  # Lightning's start-up chatter (accelerator list, tips), once per training
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        print(format_summary(run_demo(output, config, show_progress=show)))

    return run


def _train_avatar_entry() -> Callable[..., None]:
    # Lightning and the renderer are imported only when this command runs.
    from erlnet.render.dbf import DBFConfig
    from erlnet.render.losses import RenderLoss
    from erlnet.train.avatar import OptimConfig, PhaseConfig
    from erlnet.train.data import DataConfig
    from erlnet.train.trainer import TrainerConfig

    def run(
        subject: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SUBJECT_DIR", help="preprocessed subject directory")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="avatar directory (bundle, checkpoints, previews, logs)")],
        resume: Annotated[bool, tyro.conf.arg(help="continue from AVATAR_DIR/checkpoints/last.ckpt up to --max-steps")] = False,
        trainer: Annotated[TrainerConfig, Flat] = TrainerConfig(),  # noqa: B008
        data: DataConfig = DataConfig(),  # noqa: B008
        renderer: DBFConfig = DBFConfig(),  # noqa: B008
        loss: RenderLoss = RenderLoss(),  # noqa: B008
        optim: OptimConfig = OptimConfig(),  # noqa: B008
        phases: PhaseConfig = PhaseConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Train a person-specific avatar (DBF-NeRF renderer) on a preprocessed subject.

        Multi-GPU: --strategy ddp --devices 4. Ctrl-C saves a checkpoint and exports the avatar;
        --resume continues. Previews (prediction | truth | error | head/torso alpha) go to AVATAR_DIR/previews.
        """
        from erlnet.train.fit_avatar import AvatarTrainConfig, train_avatar

        show = log_flags.apply()
        if not log_flags.verbose:  # Lightning's start-up chatter (accelerator list, tips)
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        cfg = AvatarTrainConfig(trainer=trainer, data=data, renderer=renderer, loss=loss, optim=optim, phases=phases)
        try:
            result = train_avatar(subject, output, cfg, resume=resume, progress=show)
        except KeyboardInterrupt:
            log.warning("continue training with the same command and --resume")
            raise
        psnr = result.metrics.get("val/psnr", result.metrics.get("train/psnr"))
        if result.main_process:
            print(f"avatar written to {output}: {result.steps} steps"
                  + (f", PSNR {psnr:.2f} dB" if psnr is not None else ""))

    return run


def _render_entry() -> Callable[..., None]:
    def run(
        avatar: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="AVATAR_DIR", help="trained avatar directory")],
        motion: Annotated[Path, tyro.conf.arg(help="motion file (.npz from `erlnet export-motion` or the motion model)")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="output video (.mp4)")],
        audio: Annotated[Path | None, tyro.conf.arg(help="audio or video file whose sound is muxed into the video")] = None,
        batch_size: Annotated[int, tyro.conf.arg(help="frames rendered at once (memory vs speed)")] = 4,
        device: Annotated[str, tyro.conf.arg(help='"auto" (CUDA when present, else CPU), "cpu", "cuda:1", ...')] = "auto",
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Render a motion sequence with a trained avatar into an mp4 (with audio)."""
        from erlnet.inference.render_video import render_motion
        from erlnet.render.avatar import load_avatar
        from erlnet.types import Motion

        show = log_flags.apply()
        av = load_avatar(avatar, device=None if device == "auto" else device)
        m = Motion.load(motion)
        render_motion(av, m, output, audio=audio, batch_size=batch_size, progress=show)
        print(f"video written to {output}: {len(m)} frames at {round(m.fps)} fps")

    return run


def _export_motion_entry() -> Callable[..., None]:
    def run(
        subject: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SUBJECT_DIR", help="preprocessed subject directory")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="output motion file (.npz)")],
        split: Annotated[Literal["all", "train", "val", "test"], tyro.conf.arg(help="which frames of the subject")] = "all",
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Write the tracked motion of a subject as a motion file (drive an avatar with its own motion)."""
        from erlnet.inference.render_video import motion_from_subject
        from erlnet.io.subject import Subject

        log_flags.apply()
        m = motion_from_subject(Subject(subject), split)
        m.save(output)
        print(f"motion written to {output}: {len(m)} frames, {m.expression.shape[1]} {m.representation} values per frame")

    return run


def _corpus_entry() -> Callable[..., None]:
    from erlnet.motion.corpus import CorpusConfig

    def run(
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="corpus directory (created, or extended)")],
        clips: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(
            metavar="CLIPS", help="video files, folders of videos, synthetic subjects; NAME=PATH names the source")] = (),
        synth_per_style: Annotated[int, tyro.conf.arg(
            help="also generate this many synthetic clips per style (into OUTPUT/synth)")] = 0,
        synth_seconds: Annotated[float, tyro.conf.arg(help="length of each synthetic clip, seconds")] = 6.0,
        config: Annotated[CorpusConfig, Flat] = CorpusConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Build (or extend, resumably) a motion corpus from talking clips: tracking-only preprocessing,
        then compact per-clip motion + audio arrays, speakers, emotion labels and held-out clips."""
        from erlnet.errors import InputError
        from erlnet.motion.corpus import Corpus, build_corpus, corpus_summary, make_synth_clips
        from erlnet.synth import STYLES

        show = log_flags.apply()
        paths: list[str | Path] = list(clips)
        if synth_per_style > 0:
            made = make_synth_clips(output / "synth", list(STYLES), synth_per_style, synth_seconds, config.size,
                                    show_progress=show)
            paths += [f"synth={p}" for p in made]
        if not paths:
            raise InputError("give clips (files or folders) and/or --synth-per-style N")
        report = build_corpus(paths, output, config, show_progress=show)
        for f in report.failed:
            log.warning("left out %s: %s", f["video"], f["reason"])
        s = corpus_summary(Corpus(output))
        print(f"corpus written to {output}: {s['clips']} clips ({s['minutes']} min, {s['speakers']} speakers), "
              f"{s['heldout']} held out, {len(report.added)} added, {len(report.skipped)} up to date, "
              f"{len(report.failed)} failed")

    return run


def _train_motion_entry() -> Callable[..., None]:
    from erlnet.motion.config import ADFConfig, RegressorConfig
    from erlnet.train.motion import MotionDataConfig, MotionOptimConfig, MotionTrainConfig
    from erlnet.train.trainer import TrainerConfig

    defaults = MotionTrainConfig()

    def run(
        corpus: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CORPUS", help="motion corpus directory")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="motion-model directory (bundle, checkpoints, logs)")],
        resume: Annotated[bool, tyro.conf.arg(help="continue the unfinished phase from its last.ckpt")] = False,
        stage1_steps: Annotated[int, tyro.conf.arg(help="optimisation steps of the VQ-VAEs")] = defaults.stage1_steps,
        stage2_steps: Annotated[int, tyro.conf.arg(
            help="optimisation steps of the style encoders and code decoders")] = defaults.stage2_steps,
        regressor_steps: Annotated[int, tyro.conf.arg(
            help="optimisation steps of the no-VQ baseline (0 = none)")] = defaults.regressor_steps,
        cpu_threads: Annotated[int, tyro.conf.arg(
            help="torch CPU threads (0 = torch's default; 1 is much faster on a shared, busy CPU)")] = 0,
        select_best: Annotated[bool, tyro.conf.arg(
            help="stage 2 and the regressor keep their best validated weights (validation clips: "
                 "--data.val-fraction of the training clips)")] = defaults.select_best,
        trainer: Annotated[TrainerConfig, Flat] = defaults.trainer,
        data: MotionDataConfig = defaults.data,
        optim: MotionOptimConfig = defaults.optim,
        model: ADFConfig = defaults.model,
        regressor: RegressorConfig = defaults.regressor,
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Train the ADF motion model (stage 1 VQ-VAEs, then stage 2) and the regressor baseline.

        Multi-GPU: --strategy ddp --devices 4. Ctrl-C saves a checkpoint and exports the bundle; --resume continues.
        Phases run for --stage1-steps, --stage2-steps and --regressor-steps (--max-steps is not used).
        """
        from erlnet.train.motion import train_motion

        show = log_flags.apply()
        cfg = MotionTrainConfig(stage1_steps=stage1_steps, stage2_steps=stage2_steps, regressor_steps=regressor_steps,
                                cpu_threads=cpu_threads, select_best=select_best, trainer=trainer, data=data,
                                optim=optim, model=model, regressor=regressor)
        try:
            result = train_motion(corpus, output, cfg, resume=resume, progress=show)
        except KeyboardInterrupt:
            log.warning("continue training with the same command and --resume")
            raise
        done = ", ".join(f"{k} {v}" for k, v in result.stages.items())
        print(f"motion model written to {output}: steps {done}")

    return run


def _animate_entry() -> Callable[..., None]:
    from erlnet.inference.animate import AnimateConfig

    def run(
        audio: Annotated[Path, tyro.conf.arg(help="speech (wav, mp3, flac or a video with sound)")],
        style: Annotated[Path, tyro.conf.arg(
            help="style clip: a video of someone talking, or a preprocessed subject directory")],
        model: Annotated[Path, tyro.conf.arg(help="motion-model directory (from `erlnet train-motion`)")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="motion file to write (.npz)")],
        subject: Annotated[Path | None, tyro.conf.arg(
            help="preprocessed subject to retarget the head pose onto (its mean pose)")] = None,
        style_cache: Annotated[Path | None, tyro.conf.arg(
            help="keep the tracking of a style video in this directory (reused next time)")] = None,
        config: Annotated[AnimateConfig, Flat] = AnimateConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Generate motion (expression, blink, head pose; one frame per 40 ms) for speech in a clip's style."""
        from erlnet.inference.animate import animate

        log_flags.apply()
        motion = animate(audio, style, model, subject=subject, config=config, style_cache=style_cache)
        motion.save(output)
        print(f"motion written to {output}: {len(motion)} frames ({len(motion) / motion.fps:.2f} s at "
              f"{motion.fps:g} fps)")

    return run


def _eval_motion_entry() -> Callable[..., None]:
    from erlnet.eval.motion import EvalConfig

    def run(
        model: Annotated[Path, tyro.conf.arg(help="motion-model directory")],
        corpus: Annotated[Path, tyro.conf.arg(help="motion corpus whose held-out clips are scored")],
        output: Annotated[Path | None, tyro.conf.arg(
            aliases=["-o"], help="JSON report (default: MODEL/eval-motion.json)")] = None,
        config: Annotated[EvalConfig, Flat] = EvalConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Score a motion model and two baselines (mean motion, no-VQ regressor) on held-out clips:
        mouth LMD, audio-visual sync and offset, head-pose statistics, style (emotion) accuracy."""
        from erlnet.eval.motion import evaluate_motion, format_report, write_report

        show = log_flags.apply()
        result = evaluate_motion(model, corpus, config, show_progress=show)
        print(format_report(result))
        path = write_report(result, output or model / "eval-motion.json")
        print(f"json: {path}")

    return run


def _generate_entry() -> Callable[..., None]:
    from erlnet.inference.animate import AnimateConfig

    def run(
        avatar: Annotated[Path, tyro.conf.arg(help="trained avatar directory (`erlnet train-avatar`)")],
        model: Annotated[Path, tyro.conf.arg(help="motion-model directory (`erlnet train-motion`)")],
        style: Annotated[Path, tyro.conf.arg(
            help="style clip: a video of someone talking, or a preprocessed subject directory")],
        output: Annotated[Path, tyro.conf.arg(aliases=["-o"], help="video to write (.mp4)")],
        audio: Annotated[Path | None, tyro.conf.arg(help="speech: wav, mp3, flac or a video with sound")] = None,
        text: Annotated[str | None, tyro.conf.arg(
            help="text to speak with a local TTS (espeak-ng, espeak or flite) instead of --audio")] = None,
        subject: Annotated[Path | None, tyro.conf.arg(
            help="subject whose mean head pose the motion is attached to (default: the avatar's own)")] = None,
        motion_output: Annotated[Path | None, tyro.conf.arg(help="also write the generated motion (.npz)")] = None,
        style_cache: Annotated[Path | None, tyro.conf.arg(
            help="keep the tracking of a style video in this directory (reused next time)")] = None,
        batch_size: Annotated[int, tyro.conf.arg(help="frames rendered at once (memory vs speed)")] = 4,
        render_device: Annotated[str, tyro.conf.arg(
            help='renderer device: "auto" (CUDA when present, else CPU), "cpu", "cuda:1", ...')] = "auto",
        render_threads: Annotated[int, tyro.conf.arg(help="torch CPU threads while rendering (0 = default)")] = 0,
        config: Annotated[AnimateConfig, Flat] = AnimateConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Speech (or text) + a style clip + a trained avatar -> a talking-head mp4 with the speech.

        The motion model makes the motion, the renderer draws it; frames are encoded as they are
        rendered (bounded memory for any length of speech).
        """
        from erlnet.inference.generate import GenerateConfig, generate

        show = log_flags.apply()
        cfg = GenerateConfig(avatar=avatar, model=model, style=style, output=output, audio=audio, text=text,
                             subject=subject, motion_output=motion_output, style_cache=style_cache, animate=config,
                             batch_size=batch_size, render_device=render_device, render_threads=render_threads)
        r = generate(cfg, progress=show)
        print(f"video written to {r.video}: {r.frames} frames, {r.audio_seconds:.2f} s of speech ({r.speech_source}); "
              f"style {r.style_seconds:.1f} s, motion {r.motion_seconds:.1f} s, render {r.render_seconds:.1f} s "
              f"= {r.compute_per_audio_second:.2f} s of compute per second of audio")

    return run


def _evaluate_entry() -> Callable[..., None]:
    from erlnet.eval.avatar import EvaluateConfig

    def run(
        avatar: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="AVATAR_DIR", help="trained avatar directory")],
        subject: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(
            metavar="SUBJECT_DIR", help="the preprocessed subject it was trained on (its held-out part is scored)")],
        output: Annotated[Path | None, tyro.conf.arg(
            aliases=["-o"], help="report directory (default: AVATAR_DIR/evaluation)")] = None,
        config: Annotated[EvaluateConfig, Flat] = EvaluateConfig(),  # noqa: B008
        log_flags: Annotated[Verbosity, Flat] = Verbosity(),
    ) -> None:
        """Score an avatar on the held-out frames of its subject (PSNR, SSIM, CPBD, mouth LMD, mouth
        dynamics: opening correlation and amplitude ratio, mouth-box PSNR/SSIM; neck-band error, render
        speed; LPIPS, FID and SyncNet LSE-D/LSE-C when their weights are given as local files), and on
        --train-frames of its training frames, and write an HTML report: side-by-side video,
        mouth/pose/error curves."""
        from erlnet.eval.avatar import evaluate_subject, format_table
        from erlnet.eval.report import write_report

        show = log_flags.apply()
        out = output or avatar / "evaluation"
        ev = evaluate_subject(avatar, subject, out, config, progress=show)
        print(format_table(ev))
        print(f"report: {write_report(ev, out)}")

    return run


COMMANDS: dict[str, Callable[[], Callable[..., None]]] = {
    "preprocess": _preprocess_entry,
    "synth": _synth_entry,
    "demo": _demo_entry,
    "corpus": _corpus_entry,
    "train-motion": _train_motion_entry,
    "animate": _animate_entry,
    "eval-motion": _eval_motion_entry,
    "train-avatar": _train_avatar_entry,
    "render": _render_entry,
    "export-motion": _export_motion_entry,
    "generate": _generate_entry,
    "evaluate": _evaluate_entry,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `erlnet` console script; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        fns = {args[0]: COMMANDS[args[0]]()}
    else:  # help or an unknown command: list every subcommand
        fns = {name: entry() for name, entry in COMMANDS.items()}
    try:
        tyro.extras.subcommand_cli_from_dict(fns, args=args, prog="erlnet",
                                             description="erlnet: speech + style clip -> talking-head video")
    except ErlnetError as exc:
        print(f"erlnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erlnet: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
