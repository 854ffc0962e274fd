"""Avatar training and rendering: speed (training steps/s, render frames/s at 256 and 512, peak RSS)
and quality after a fixed training-time budget on held-out frames driven by their own tracked motion
(PSNR, SSIM, and the error in a band around the chin/neck line), for fusion="feature" and "pixel",
on a synthetic subject and on a real clip (train on the first 80 %, test on the last 20 %).

    python -m benchmarks.render                          # speed only (a few minutes on 2 CPU cores)
    python -m benchmarks.render --minutes 30             # + quality: 2 subjects x 2 fusions x 30 min
    python -m benchmarks.render --minutes 0.5 --smoke    # a short end-to-end check of the quality path

Every measurement runs in its own process (peak RSS is its own). Subjects are preprocessed once into
--work (default bench-results/render-work) and reused.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from benchmarks.common import CHILD_RSS, RESULTS, SHARED_DATA, median, run_child, table, write_json

REAL_VIDEO = SHARED_DATA / "styletalk" / "video" / "Obama_clip1.mp4"

SPEED_CHILD = """
import json, sys, time
import torch
from erlnet.render.base import RenderCondition
from erlnet.render.dbf import DBFConfig
from erlnet.render.losses import RenderLoss
size, mode, fusion, n, batch = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dev = torch.device("cuda" if sys.argv[6] == "auto" and torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
renderer = DBFConfig(fusion=fusion).setup(1434, size).to(dev)
f = 2.0 * size
K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])
t = torch.tensor([0.0, 0.02, 0.8])  # a head-and-shoulders crop: the head 0.8 m away (as tracked)
cond = RenderCondition(torch.randn(batch, 1434) * 0.01, torch.zeros(batch), torch.eye(3).expand(batch, 3, 3),
                       t.expand(batch, 3), torch.eye(3), t, K, torch.rand(batch, 3, size, size)).to(dev)
if mode == "train":
    loss_fn = RenderLoss()
    target = torch.rand(batch, 3, size, size, device=dev)
    masks = torch.zeros(batch, size, size, dtype=torch.long, device=dev)
    masks[:, : size // 2], masks[:, size // 2 :] = 2, 1  # head above torso
    opt = torch.optim.Adam(renderer.parameters(), 1e-3)
    def step():
        out = renderer(cond)
        loss, _ = loss_fn(out, target, masks)
        opt.zero_grad(); loss.backward(); opt.step()
else:
    renderer.eval()
    def step():
        with torch.inference_mode():
            renderer(cond)
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
step()  # warm-up (allocations, kernels)
sync()
t0 = time.perf_counter()
for _ in range(n):
    step()
sync()
dt = time.perf_counter() - t0
""" + CHILD_RSS + """
print(json.dumps({"per_s": n * (1 if mode == "train" else batch) / dt, "peak_rss_mb": peak_rss_mb, "device": str(dev)}))
"""

QUALITY_CHILD = """
import json, sys, time
from pathlib import Path
from benchmarks.render import evaluate
from erlnet.render.dbf import DBFConfig
from erlnet.train.avatar import PhaseConfig
from erlnet.train.data import DataConfig
from erlnet.train.fit_avatar import AvatarTrainConfig, train_avatar
from erlnet.train.trainer import TrainerConfig
subject, out, fusion, minutes, size, steps, eval_frames = sys.argv[1:8]
cfg = AvatarTrainConfig(
    trainer=TrainerConfig(max_steps=int(steps), max_minutes=float(minutes), log_every=50, preview_every=0,
                          checkpoint_every=0, val_every=0, accelerator="cpu" if sys.argv[8] == "cpu" else "auto"),
    data=DataConfig(image_size=int(size)),
    renderer=DBFConfig(fusion=fusion),
    phases=PhaseConfig(warmup_steps=int(steps) // 5, lip_steps=int(steps) // 10),
)
t0 = time.perf_counter()
result = train_avatar(subject, out, cfg, progress=False)
train_s = time.perf_counter() - t0
res = evaluate(Path(subject), Path(out), int(eval_frames))
""" + CHILD_RSS + """
res.update(steps=result.steps, train_s=train_s, steps_per_s=result.steps / train_s, peak_rss_mb=peak_rss_mb)
print(json.dumps(res))
"""


def neck_band(labels: Any, landmarks: Any, scale: float, width: float = 0.06) -> Any:
    """(S, S) bool strip, `width` x S wide, around the chin/neck line: where the head label meets the
    torso label below the mouth corners (the seam a dual-branch renderer must get right). labels
    (S, S) at the evaluation size; landmarks (478, 3) subject-crop pixels, x `scale` -> evaluation
    pixels. Without a visible seam (no torso) the strip follows the JAW landmarks instead."""
    import cv2
    import numpy as np

    from erlnet.face import topology

    size = labels.shape[0]
    r = max(1, int(round(width * size / 2)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    head = (labels == 2).astype(np.uint8)
    seam = cv2.dilate(head, np.ones((3, 3), np.uint8)).astype(bool) & (labels == 1)
    mouth_y = float(landmarks[topology.MOUTH_CORNERS, 1].mean() * scale)
    seam[: int(np.ceil(mouth_y))] = False
    if not seam.any():
        pts = np.round(landmarks[topology.JAW, :2] * scale).astype(np.int32)
        cv2.polylines(seam.view(np.uint8), [pts], isClosed=False, color=1, thickness=1)
    return cv2.dilate(seam.astype(np.uint8), kernel).astype(bool)


def evaluate(subject_dir: Path, avatar_dir: Path, max_frames: int = 50) -> dict[str, Any]:
    """Render the held-out frames (after the train split) of a subject with its avatar, driven by
    their own tracked motion, and compare them with the real frames at the avatar's size."""
    import numpy as np
    from skimage.metrics import structural_similarity

    from erlnet.inference.render_video import motion_from_subject
    from erlnet.io.subject import Subject
    from erlnet.render.avatar import load_avatar, resize_rgb, to_uint8_frames
    from erlnet.train.data import evenly_spaced, resize_labels

    subject = Subject(subject_dir)
    avatar = load_avatar(avatar_dir, device="cpu")
    size = avatar.image_size
    start = subject.manifest.split["train"][1]
    frames = evenly_spaced(np.arange(start, len(subject)), max_frames)
    motion = motion_from_subject(subject, (start, len(subject)))
    lms = subject.tracking()["landmarks"]
    psnrs, ssims, neck_l1, neck_sq = [], [], [], []
    for i in frames:
        k = int(i - start)
        pred = to_uint8_frames(avatar.render(motion, k, k + 1).rgb)[0].astype(np.float64)
        truth = resize_rgb(subject.frame(int(i)), size).astype(np.float64)
        mse = np.mean((pred - truth) ** 2)
        psnrs.append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
        ssims.append(structural_similarity(pred, truth, channel_axis=2, data_range=255.0))
        labels = resize_labels(subject.mask(int(i)), size)
        band = neck_band(labels, lms[i], size / subject.manifest.size)
        err = np.abs(pred - truth)[band]
        neck_l1.append(err.mean())
        neck_sq.append((err**2).mean())
    neck_mse = float(np.mean(neck_sq))
    return {
        "eval_frames": len(frames),
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "neck_l1": float(np.mean(neck_l1)),  # mean |error| in the neck band, 0..255
        "neck_psnr": float(10 * np.log10(255.0**2 / max(neck_mse, 1e-10))),
    }


def prepare_subjects(work: Path, size: int, seconds: float, real: bool) -> dict[str, Path]:
    """Preprocessed subjects (cached in `work`): a synthetic clip, and the real clip when present."""
    from erlnet.preprocess.pipeline import PreprocessConfig, run_preprocess
    from erlnet.synth import SynthConfig, generate

    cfg = PreprocessConfig(size=size, split=(0.8, 0.1))
    subjects = {}
    synth_dir = work / f"synth-{seconds:g}s-{size}"
    if not (synth_dir / "subject" / "manifest.json").exists():
        res = generate(SynthConfig(seconds=seconds, size=size, seed=0), synth_dir / "clip", progress=False)
        run_preprocess(res.video, synth_dir / "subject", cfg, show_progress=False)
    subjects["synthetic"] = synth_dir / "subject"
    if real and REAL_VIDEO.exists():
        real_dir = work / f"{REAL_VIDEO.stem}-{size}"
        run_preprocess(REAL_VIDEO, real_dir, cfg, show_progress=False)  # skips finished steps
        subjects[REAL_VIDEO.stem] = real_dir
    return subjects


def bench_speed(runs: int, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    plan = [("train", 256, 3, 1), ("train", 512, 2, 1), ("render", 256, 3, 1), ("render", 512, 2, 1)]
    for mode, size, n, batch in plan:
        for fusion in ("feature", "pixel"):
            res = [run_child(SPEED_CHILD, [str(size), mode, fusion, str(n), str(batch), device])[0] for _ in range(runs)]
            out[f"{mode}_{fusion}_{size}"] = {"per_s": median([r["per_s"] for r in res]),
                                              "peak_rss_mb": max(r["peak_rss_mb"] for r in res)}
    return out


def bench_quality(subjects: dict[str, Path], work: Path, minutes: float, size: int, steps_per_s: float,
                  eval_frames: int, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    steps = max(20, int(steps_per_s * minutes * 60))  # the LR schedule spans the budget
    for name, subject in subjects.items():
        for fusion in ("feature", "pixel"):
            avatar = work / "avatars" / f"{name}-{fusion}-{minutes:g}min"
            shutil.rmtree(avatar, ignore_errors=True)
            res, wall = run_child(QUALITY_CHILD, [str(subject), str(avatar), fusion, str(minutes), str(size),
                                                  str(steps), str(eval_frames), device])
            out[f"{name}/{fusion}"] = res | {"wall_s": wall}
    return out


def report(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for key, v in res.get("speed", {}).items():
        mode, fusion, size = key.split("_")
        unit = "steps/s" if mode == "train" else "frames/s"
        rows.append((f"{mode} {fusion} {size}px", f"{v['per_s']:.3f} {unit}  (peak RSS {v['peak_rss_mb']:.0f} MB)"))
    for key, q in res.get("quality", {}).items():
        rows.append((f"{key} ({res['minutes']:g} min)",
                     f"PSNR {q['psnr']:.2f} dB  SSIM {q['ssim']:.3f}  neck |err| {q['neck_l1']:.1f}/255 "
                     f"(PSNR {q['neck_psnr']:.2f})  {q['steps']} steps ({q['steps_per_s']:.2f}/s incl. start-up)  "
                     f"RSS {q['peak_rss_mb']:.0f} MB"))
    return table("avatar training and rendering (DBF-NeRF)", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=0.0, help="training budget per avatar (0: speed only)")
    ap.add_argument("--size", type=int, default=256, help="working and training resolution of the quality runs")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic clip")
    ap.add_argument("--eval-frames", type=int, default=50, help="held-out frames evaluated per avatar")
    ap.add_argument("--runs", type=int, default=1, help="repeats of each speed measurement (median)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny quality run: 4 s synthetic clip, 4 eval frames, no real clip")
    ap.add_argument("--work", type=Path, default=RESULTS / "render-work")
    args = ap.parse_args()
    res: dict[str, Any] = {"minutes": args.minutes, "size": args.size}
    if not args.skip_speed:
        res["speed"] = bench_speed(args.runs, args.device)
    if args.minutes > 0:
        args.work.mkdir(parents=True, exist_ok=True)
        seconds, frames = (4.0, 4) if args.smoke else (args.seconds, args.eval_frames)
        subjects = prepare_subjects(args.work, args.size, seconds, real=not args.smoke)
        rate = res.get("speed", {}).get(f"train_feature_{args.size}", {}).get("per_s", 0.2)
        res["quality"] = bench_quality(subjects, args.work, args.minutes, args.size, rate, frames, args.device)
    print(report(res))
    print(f"json: {write_json('render' + ('-smoke' if args.smoke else ''), res)}")


if __name__ == "__main__":
    main()
