"""The `erlnet` command. Each subcommand is a typed function; tyro builds the CLI from the
signatures and config dataclasses (so every nested config field is a flag, with its comment as help)."""

# No `from __future__ import annotations`: tyro reads the real types of the closures below.

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

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
        return not self.quiet


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
        print(f"synthetic subject written to {output}: {result.video_path.name} + {result.truth_path.name}")

    return run


def _demo_entry() -> Callable[..., None]:
    from erlnet.demo import DemoConfig, run_demo

    def run(output: Out = Path("out/demo"), config: Annotated[DemoConfig, Flat] = DemoConfig(), log_flags: Annotated[Verbosity, Flat] = Verbosity()) -> None:  # noqa: B008
        """Run the built-in demo on a synthetic subject the project generates itself (no downloads)."""
        show = log_flags.apply()
        run_demo(output, config, show_progress=show)

    return run


COMMANDS: dict[str, Callable[[], Callable[..., None]]] = {
    "preprocess": _preprocess_entry,
    "synth": _synth_entry,
    "demo": _demo_entry,
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
