"""End to end (`erlnet generate`): seconds of compute per second of speech at 256x256, split into
style tracking, motion model and rendering (+ encoding). Target: <= 1 (real time) on 2 CPU cores.

    python -m benchmarks.e2e [--seconds 4] [--size 256] [--render-threads 0]

Models are default-size and randomly initialised unless --avatar / --model name trained ones: the ADF
motion model with statistics of a procedural corpus, and a DBF-NeRF avatar of a synthetic subject.
The motion model's cost does not depend on its weights; the renderer's does (a trained avatar's
occupancy grids skip empty space), so the real-time figure is the one with a trained avatar:

    python -m benchmarks.e2e --seconds 8 --avatar bench-results/render-work/avatars/synthetic-feature-20min
The style clip is a synthetic video (tracked with MediaPipe on every run, as `erlnet generate` does
without --style-cache). Fixtures are made once into --work (default bench-results/e2e-work); the
generation runs in a child process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import CHILD_RSS, RESULTS, run_child, table, write_json

CHILD = """
import json, sys
from pathlib import Path
from erlnet.inference.animate import AnimateConfig
from erlnet.inference.generate import GenerateConfig, generate
work, threads, motion_threads, avatar, model = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
cfg = GenerateConfig(avatar=Path(avatar), model=Path(model), style=work / "style" / "video.mp4",
                     audio=work / "speech.wav", output=work / "out.mp4", render_threads=threads,
                     animate=AnimateConfig(cpu_threads=motion_threads), render_device="cpu")
r = generate(cfg)
""" + CHILD_RSS + """
print(json.dumps({"frames": r.frames, "audio_s": r.audio_seconds, "style_s": r.style_seconds,
                  "motion_s": r.motion_seconds, "render_s": r.render_seconds, "peak_rss_mb": peak_rss_mb}))
"""


def prepare(work: Path, size: int, seconds: float) -> None:
    """Fixtures in `work` (made once per size and length): a synthetic style video and subject, a
    default-size untrained motion model, a default DBF avatar at `size`, built-in speech."""
    import numpy as np

    if (work / "ready").exists():
        return
    import torch

    from erlnet.inference.animate import save_motion_model
    from erlnet.io.audio import save_wav
    from erlnet.io.subject import Subject
    from erlnet.motion.config import ADFConfig, compute_statistics
    from erlnet.motion.corpus import toy_corpus
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
    from erlnet.render.avatar import AvatarMeta, save_avatar
    from erlnet.render.dbf import DBFConfig
    from erlnet.synth import SynthConfig, generate
    from erlnet.synth.speech import builtin_speech

    work.mkdir(parents=True, exist_ok=True)
    style = generate(SynthConfig(seconds=4.0, size=size, seed=1, speech="builtin"), work / "style", progress=False)
    run_preprocess(style.video, work / "subject", PreprocessConfig(size=size), show_progress=False)
    corpus = toy_corpus(work / "corpus", n_speech=2, n_style=1, seconds=4.0)
    clips = [corpus.load(x) for x in corpus.select("all", audio=True)]
    stats = compute_statistics([x.expression for x in clips], [x.rotation for x in clips],
                               [x.translation for x in clips], [x.audio for x in clips])
    model = ADFConfig().setup(corpus.expression_dim, corpus.audio_dim, statistics=stats)
    save_motion_model(work / "model", model, None, corpus.audio_config, corpus.representation_config,
                      {"stages": {"stage1": 1, "stage2": 1}})
    meta = AvatarMeta.from_subject(Subject(work / "subject"), size)
    torch.manual_seed(0)
    save_avatar(work / "avatar", DBFConfig().setup(meta.expression_dim, size), meta)
    save_wav(work / "speech.wav", builtin_speech(seconds, np.random.default_rng(0)).wav, 16000)
    (work / "ready").write_text("fixtures complete\n")


def bench(work: Path, size: int, seconds: float, render_threads: int, motion_threads: int,
          avatar: Path | None = None, model: Path | None = None) -> dict[str, Any]:
    """`avatar` / `model`: trained ones instead of the fixtures' randomly initialised ones."""
    prepare(work, size, seconds)
    avatar, model = avatar or work / "avatar", model or work / "model"
    r, wall = run_child(CHILD, [str(work), str(render_threads), str(motion_threads), str(avatar), str(model)])
    a = r["audio_s"]
    return r | {"avatar": str(avatar), "model": str(model),
        "size": size, "wall_s": wall, "render_threads": render_threads, "motion_threads": motion_threads,
        "per_audio_s": {k: r[f"{k}_s"] / a for k in ("style", "motion", "render")},
        "compute_per_audio_s": (r["style_s"] + r["motion_s"] + r["render_s"]) / a,
        "render_fps": r["frames"] / r["render_s"],
    }


def report(res: dict[str, Any]) -> str:
    p = res["per_audio_s"]
    return table(f"end to end (erlnet generate) at {res['size']}x{res['size']}", [
        ("avatar / motion model", f"{res['avatar']} / {res['model']}"),
        ("speech", f"{res['audio_s']:.1f} s -> {res['frames']} frames"),
        ("total", f"{res['compute_per_audio_s']:.2f} s of compute per s of audio (target <= 1)"),
        ("  style tracking", f"{p['style']:.3f} s/s ({res['style_s']:.1f} s, once per style clip)"),
        ("  motion model", f"{p['motion']:.3f} s/s ({res['motion_s']:.1f} s, {res['motion_threads']} thread)"),
        ("  render + encode", f"{p['render']:.2f} s/s ({res['render_fps']:.2f} frames/s)"),
        ("peak RSS", f"{res['peak_rss_mb']:.0f} MB"),
    ])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the speech")
    ap.add_argument("--size", type=int, default=256, help="avatar resolution")
    ap.add_argument("--render-threads", type=int, default=0, help="torch threads while rendering (0 = default)")
    ap.add_argument("--motion-threads", type=int, default=1, help="torch threads of the motion model")
    ap.add_argument("--work", type=Path, default=None, help="fixture directory (default bench-results/e2e-work-...)")
    ap.add_argument("--avatar", type=Path, default=None,
                    help="a trained avatar at --size (default: a randomly initialised one, which has no occupancy "
                         "to skip empty space and renders several times slower than a trained one)")
    ap.add_argument("--model", type=Path, default=None, help="a trained motion model (default: a random one)")
    args = ap.parse_args(argv)
    work = args.work or RESULTS / f"e2e-work-{args.size}-{args.seconds:g}s"
    res = bench(work, args.size, args.seconds, args.render_threads, args.motion_threads, args.avatar, args.model)
    print(report(res))
    print(f"json: {write_json('e2e', res)}")


if __name__ == "__main__":
    main()
