"""The built-in demo: runs on a fresh machine with no user files and no downloads.

For now (until the motion model and renderer land) it generates a synthetic talking subject and
preprocesses it, then prints where everything is and what it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erlnet.io.subject import Subject
from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
from erlnet.synth import SynthConfig, generate


@dataclass
class DemoConfig:
    """Settings of `erlnet demo`."""

    seconds: float = 8.0  # length of the generated clip
    style: str = "neutral"  # speaking style of the synthetic subject
    size: int = 256  # working resolution of the preprocessed subject
    seed: int = 0  # random seed of the synthetic subject


def run_demo(out: Path, config: DemoConfig | None = None, show_progress: bool = True) -> Path:
    """Synthesise a clip into `out/synth`, preprocess it into `out/subject`; returns the subject path."""
    cfg = config or DemoConfig()
    out = Path(out)
    synth = generate(SynthConfig(seconds=cfg.seconds, style=cfg.style, seed=cfg.seed, size=cfg.size),
                     out / "synth", progress=show_progress)
    results = run_preprocess(synth.video, out / "subject", PreprocessConfig(size=cfg.size),
                             show_progress=show_progress)
    subject = Subject(out / "subject")
    tr = subject.tracking()
    truth = np.load(synth.truth)
    print(f"synthetic clip : {synth.video}  (ground truth: {synth.truth})")
    print(f"subject        : {subject.root}")
    print(f"  frames       : {len(subject)} at {subject.fps:g} fps, {subject.manifest.size}x{subject.manifest.size}"
          f"  (frames/, masks/, background.png)")
    print(f"  tracking     : landmarks {tr['landmarks'].shape}, expression {tr['expression'].shape}, "
          f"pose {tr['rotation'].shape}, blink {tr['blink'].shape}  (tracking.npz)")
    feats = sorted(p.name for p in (subject.root / "audio").glob("*.npy"))
    print(f"  audio        : audio.wav + features {feats}")
    print(f"  split        : {json.dumps(subject.manifest.split)}")
    steps = ", ".join(f"{r.name} {r.seconds:.1f}s" for r in results if not r.skipped)
    print(f"  steps        : {steps or 'all up to date'}")
    print(f"  ground truth : {len(truth['R'])} frames of pose/blink/mouth in {synth.truth.name}")
    return subject.root
