"""Motion model: generation speed, training time on the shared corpus, and the evaluation table.

    python -m benchmarks.motion [--corpus out/corpus-real] [--model MOTION_MODEL] [--train-steps 20]

1. Generation speed (x real time; target >= 100x on one CPU thread): the default-size ADF model
   (weights do not change the cost) on `--seconds` of speech, head pose generated and static.
2. Training time: seconds per step of each phase (default configuration, batch 32) on the corpus,
   measured over `--train-steps` steps, and the time the default step counts would take.
   The corpus is built from ../shared/data when absent (about 15 minutes on 2 cores).
3. Evaluation table (`erlnet eval-motion`) with both baselines. Without `--model` the model of the
   short timing run is scored: that checks the pipeline, it is not a trained model.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tyro

from benchmarks.common import RESULTS, ROOT, SHARED_DATA, median, table, write_json

SOURCES = ("grid_s1/video", "styletalk/video", "mead_style", "retalking", "sadtalker")


@dataclass
class MotionBench:
    """Settings of the motion benchmark."""

    corpus: Path = ROOT / "out" / "corpus-real"  # motion corpus (built from ../shared/data when absent)
    model: Path | None = None  # trained motion model to evaluate (default: the short timing run)
    train_steps: int = 20  # steps per phase in the training-time part (0 = skip training and eval)
    seconds: float = 60.0  # speech length of the generation-speed part
    runs: int = 3  # repetitions of the generation timing (median)
    pca_dim: int = 64  # PCA components of the expression in the timed training run
    threads: int = 1  # torch CPU threads of the timed training run (0 = torch's default)


def generation_speed(seconds: float, runs: int) -> dict[str, Any]:
    """x real time of `ADFModel.generate` (the model `erlnet train-motion` builds by default, one thread) on
    procedural speech."""
    from erlnet.inference.animate import cpu_threads
    from erlnet.motion.config import compute_statistics
    from erlnet.motion.corpus import toy_corpus
    from erlnet.train.motion import MotionTrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        c = toy_corpus(Path(tmp) / "c", n_speech=2, n_style=1, seconds=max(seconds, 4.0))
        clips = [c.load(x) for x in c.select("all", audio=True)]
        config = MotionTrainConfig().model
        stats = compute_statistics([x.expression for x in clips], [x.rotation for x in clips],
                                   [x.translation for x in clips], [x.audio for x in clips], pca_dim=config.pca_dim)
        model = config.setup(c.expression_dim, c.audio_dim, statistics=stats).eval()
        clip = clips[0]
        n = int(seconds * 25)
        out: dict[str, Any] = {"seconds": seconds, "frames": n}
        with cpu_threads(1):
            model.generate(clip.audio[:50], clip.expression, clip.rotation, clip.translation)  # warm-up
            for mode in ("generated", "static"):
                times = []
                for r in range(runs):
                    t0 = time.perf_counter()
                    model.generate(clip.audio[:n], clip.expression, clip.rotation, clip.translation, pose_mode=mode,
                                   seed=r)
                    times.append(time.perf_counter() - t0)
                out[f"x_realtime_{mode}_pose"] = seconds / median(times)
    return out


def ensure_corpus(path: Path) -> Path:
    from erlnet.motion.corpus import build_corpus

    if (path / "corpus.json").exists():
        return path
    sources = [SHARED_DATA / s for s in SOURCES if (SHARED_DATA / s).exists()]
    if not sources:
        raise SystemExit(f"skipped: no corpus at {path} and no shared data at {SHARED_DATA}")
    print(f"building the corpus {path} from {len(sources)} folders of {SHARED_DATA} ...")
    build_corpus(sources, path, show_progress=True)
    return path


def training_time(corpus: Path, steps: int, pca_dim: int, run_dir: Path, threads: int) -> dict[str, Any]:
    """Seconds per step of each phase over `steps` steps (default model and batch size)."""
    import shutil

    from erlnet.train.motion import MotionTrainConfig, train_motion
    from erlnet.train.trainer import TrainerConfig

    shutil.rmtree(run_dir, ignore_errors=True)
    base = MotionTrainConfig()
    cfg = replace(base, stage1_steps=steps, stage2_steps=steps, regressor_steps=steps, cpu_threads=threads,
                  model=replace(base.model, pca_dim=pca_dim), regressor=replace(base.regressor, pca_dim=pca_dim),
                  trainer=TrainerConfig(val_every=0, checkpoint_every=0, log_every=10, accelerator="cpu",
                                        devices="1"))
    t0 = time.perf_counter()
    res = train_motion(corpus, run_dir, cfg, progress=False)
    total = time.perf_counter() - t0
    per_step = {p: s / steps for p, s in res.seconds.items()}
    full = sum(per_step[p] * base.steps(p) for p in per_step)  # type: ignore[arg-type]
    return {"steps_per_phase": steps, "threads": threads, "seconds_per_step": per_step, "wall_s": total,
            "setup_s": total - sum(res.seconds.values()),
            "default_steps": {p: base.steps(p) for p in per_step},  # type: ignore[arg-type]
            "default_run_hours_estimate": full / 3600, "run_dir": str(run_dir)}


def main(cfg: MotionBench) -> None:
    from erlnet.eval.motion import evaluate_motion, format_report, json_safe
    from erlnet.motion.corpus import Corpus, corpus_summary

    res: dict[str, Any] = {"generation": generation_speed(cfg.seconds, cfg.runs)}
    g = res["generation"]
    rows = [("generation (generated pose)", f"{g['x_realtime_generated_pose']:.0f}x real time"),
            ("generation (static pose)", f"{g['x_realtime_static_pose']:.0f}x real time")]
    if cfg.train_steps > 0:
        corpus = ensure_corpus(cfg.corpus)
        res["corpus"] = corpus_summary(Corpus(corpus))
        rows.append(("corpus", f"{res['corpus']['clips']} clips, {res['corpus']['minutes']} min, "
                               f"{res['corpus']['heldout']} held out"))
        run_dir = RESULTS / "motion-timing-run"
        res["training"] = training_time(corpus, cfg.train_steps, cfg.pca_dim, run_dir, cfg.threads)
        t = res["training"]
        for p, s in t["seconds_per_step"].items():
            rows.append((f"training {p}", f"{s:.2f} s/step (batch 32, {t['steps_per_phase']} steps timed)"))
        rows.append(("default run (estimate)", f"{t['default_run_hours_estimate']:.1f} h on this machine "
                                               f"({t['default_steps']})"))
        model = cfg.model or run_dir
        ev = evaluate_motion(model, corpus)
        res["eval"] = ev
        res["eval_model_is_trained"] = cfg.model is not None
        print(table("motion model", rows))
        print()
        if cfg.model is None:
            print(f"(model of the {cfg.train_steps}-step timing run: a pipeline check, not a trained model)")
        print(format_report(ev))
    else:
        print(table("motion model", rows))
    print(f"json: {write_json('motion', json_safe(res))}")


if __name__ == "__main__":
    main(tyro.cli(MotionBench, description=__doc__))
