"""The motion corpus: many talking clips reduced to compact per-clip motion + audio arrays.

`build_corpus` preprocesses every clip in tracking-only mode (`erlnet.preprocess.pipeline`) into a
cache of subject directories, then keeps only what the motion model needs:

```
CORPUS/
  corpus.json        schema, config, audio encoder and representation, clips, speakers, held-out
                     clips, failed clips with their reasons
  clips/<id>.npz     expression (T, D) relative to the clip's own neutral face, neutral (478, 3) m,
                     blink (T,), rotation (T, 3, 3), translation (T, 3) m, valid (T,),
                     audio (T, A) and envelope (T,) dB when the clip has speech, meta (JSON string)
  speakers.npz       one neutral face (478, 3) m per speaker (see `speaker_neutrals`)
  cache/<id>/        tracking-only subject directories: an interrupted clip resumes from here; removed
                     once the clip is stored unless `keep_cache`
```

Clip names carry labels where datasets follow a convention (`parse_clip_name`): MEAD
`M030_front_angry_level3_001` gives speaker M030 and emotion angry; GRID sentence codes (`bbaf2n`)
take the speaker from an `s<N>` folder name; `<name>_clip<k>` gives speaker <name>; synthetic
subjects (a directory with `truth.npz`) give speaker `synth` and their style. Otherwise every clip
is its own speaker.

Clips without speech (MEAD) are style references only: they train the motion VQ-VAEs and the style
classifier, never audio-driven generation. Held-out clips (`choose_heldout`) are whole clips chosen
by a hash of their id, so the choice is reproducible and does not depend on processing order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from erlnet.audio.base import AudioEncoderConfig, config_from_dict
from erlnet.audio.melformant import MelFormantConfig
from erlnet.errors import ErlnetError, FormatError, InputError
from erlnet.face import topology as tp
from erlnet.face.pose import normalise_canonical, robust_similarity
from erlnet.face.representation import LandmarkRepresentationConfig, MotionRepresentation
from erlnet.io.audio import load_audio
from erlnet.io.subject import Subject, atomic_write_text, load_npz, params_hash, save_npz
from erlnet.io.video import file_sha256
from erlnet.progress import progress

log = logging.getLogger(__name__)

CORPUS_SCHEMA = "erlnet.motion-corpus"
CORPUS_VERSION = 1
AUDIO_SR = 16000
VIDEO_SUFFIXES = frozenset({".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a")
# Folder names that say nothing about the source: the source is named after their parent instead.
_GENERIC_DIRS = frozenset({"video", "videos", "clips", "mp4", "data", "samples", "source_video"})

_MEAD = re.compile(r"^(?P<speaker>[MW]\d{3})_(?P<view>[a-z]+)_(?P<emotion>[a-z]+)_level(?P<level>\d+)_\d+$")
# GRID sentence codes: command, colour, preposition, letter, digit, adverb (e.g. bbaf2n, lgwzzp).
_GRID = re.compile(r"^[bglps][bgrw][abiw][a-z][0-9z][agnps]$")
_GRID_SPEAKER = re.compile(r"(?:^|[_-])(s\d+)$")
_NAMED_CLIP = re.compile(r"^(?P<speaker>.+?)_clip")
_OWN_ENTRIES = frozenset({"clips", "cache", "synth", "speakers.npz"})  # what a corpus directory may hold
EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")


# ---------------------------------------------------------------- configuration and records
@dataclass
class CorpusConfig:
    """Settings of `erlnet corpus`."""

    size: int = 256  # working crop of the tracking-only preprocessing, pixels
    fps: float = 25.0  # frames per second of the motion
    audio_dir: Path | None = None  # where to find <stem>.wav for clips whose video has no audio track
    holdout_fraction: float = 0.1  # share of clips held out in sources with at least `min_clips_for_fraction` clips
    min_clips_for_fraction: int = 20  # smaller sources (with >= 2 clips) hold out exactly one clip
    keep_cache: bool = False  # keep the tracking-only subject directories (cache/<id>) after a clip is stored
    representation: LandmarkRepresentationConfig = field(default_factory=LandmarkRepresentationConfig)
    audio: AudioEncoderConfig = field(default_factory=MelFormantConfig)


@dataclass
class ClipSource:
    """One clip to add: a video file, its source name and where its speech is."""

    video: Path
    source: str
    audio: Path | None = None  # separate speech file when the video has no audio track
    synth_style: str | None = None  # style of a synthetic subject
    name: str = ""  # stem used for labels (the directory name of a synthetic subject)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.video.stem


@dataclass
class ClipInfo:
    """A clip of the corpus, as listed in corpus.json."""

    id: str
    source: str
    speaker: str
    video: str
    file: str  # npz path relative to the corpus root
    n_frames: int
    fps: float
    has_audio: bool
    audio: str | None = None  # separate speech file used, None when from the video's own track
    emotion: str | None = None  # MEAD emotion label, or the emotion of a synthetic style
    style: str | None = None  # synthetic style name, or the emotion
    heldout: bool = False
    tracked_fraction: float = 1.0


@dataclass
class ClipData:
    """Arrays of one clip. expression (T, D) relative to `neutral` (478, 3) metres, blink (T,),
    rotation (T, 3, 3), translation (T, 3) metres, valid (T,) bool; audio (T, A) and envelope (T,) dB
    or None for clips without speech."""

    info: ClipInfo
    expression: np.ndarray
    neutral: np.ndarray
    blink: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    valid: np.ndarray
    audio: np.ndarray | None
    envelope: np.ndarray | None

    def __len__(self) -> int:
        return len(self.expression)


@dataclass
class BuildReport:
    """What `build_corpus` did."""

    root: Path
    added: list[str]
    skipped: list[str]  # already up to date
    failed: list[dict[str, str]]  # {"video", "reason"}
    n_clips: int
    n_heldout: int


# ---------------------------------------------------------------- naming
def parse_clip_name(stem: str, path: Path | None = None) -> dict[str, str | None]:
    """Labels from a clip's file stem: {"speaker", "emotion"} (None when the name says nothing)."""
    m = _MEAD.match(stem)
    if m:
        return {"speaker": m["speaker"], "emotion": m["emotion"]}
    if _GRID.match(stem):
        for part in reversed(path.parent.parts if path is not None else ()):
            g = _GRID_SPEAKER.search(part)
            if g:
                return {"speaker": g[1], "emotion": None}
        return {"speaker": None, "emotion": None}
    m = _NAMED_CLIP.match(stem)
    if m:
        return {"speaker": m["speaker"], "emotion": None}
    return {"speaker": None, "emotion": None}


def source_name(path: Path) -> str:
    """Name of the dataset a clip folder or file belongs to (skipping generic folder names)."""
    d = path if path.is_dir() else path.parent
    d = d.resolve()
    while d.name.lower() in _GENERIC_DIRS and d.parent != d:
        d = d.parent
    return _slug(d.name) or "clips"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")


def find_audio(video: Path, audio_dir: Path | None = None) -> Path | None:
    """Separate speech for a video without audio: <stem>.wav (or flac, mp3, m4a) in `audio_dir`,
    next to the video, or in a sibling `wav`/`audio` folder (the styletalk layout). None if absent."""
    dirs = [audio_dir] if audio_dir is not None else []
    dirs += [video.parent, video.parent.parent / "wav", video.parent.parent / "audio"]
    for d in dirs:
        for suffix in AUDIO_SUFFIXES:
            p = d / f"{video.stem}{suffix}"
            if p.is_file() and p.resolve() != video.resolve():
                return p
    return None


def _synth_style(d: Path) -> str | None:
    """Style of a synthetic subject directory (from its json sidecar), if it records one."""
    for name in ("config.json", "synth.json", "meta.json"):
        p = d / name
        if p.is_file():
            try:
                meta = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            nested = meta.get("config") if isinstance(meta.get("config"), dict) else {}
            for style in (nested.get("style"), meta.get("style")):
                if isinstance(style, str):
                    return style
    return None


def _synth_video(d: Path) -> Path | None:
    if not (d / "truth.npz").is_file():
        return None
    videos = sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return videos[0] if videos else None


def discover_clips(paths: Sequence[str | Path], audio_dir: Path | None = None) -> list[ClipSource]:
    """Clips named on the command line: video files, folders of videos, synthetic subject folders
    (holding truth.npz) or folders of those. `NAME=PATH` names the source explicitly."""
    out: list[ClipSource] = []
    for spec in paths:
        text = str(spec)
        name, sep, rest = text.partition("=")
        explicit = bool(sep) and bool(name) and not Path(text).exists()
        path = Path(rest if explicit else text).expanduser().resolve()
        if not path.exists():
            raise InputError(f"{path}: no such file or directory")
        src = _slug(name) if explicit else source_name(path)
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise InputError(f"{path}: not a video file (expected one of {', '.join(sorted(VIDEO_SUFFIXES))})")
            out.append(ClipSource(path, src, audio=find_audio(path, audio_dir)))
            continue
        found = _clips_in_dir(path, src, audio_dir)
        if not found:
            raise InputError(f"{path}: holds no video files or synthetic subjects")
        out.extend(found)
    return out


def _clips_in_dir(path: Path, src: str, audio_dir: Path | None) -> list[ClipSource]:
    synth = _synth_video(path)
    if synth is not None:
        return [ClipSource(synth, src, synth_style=_synth_style(path), name=path.name)]
    found = []
    for p in sorted(path.iterdir()):
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            found.append(ClipSource(p, src, audio=find_audio(p, audio_dir)))
        elif p.is_dir() and (v := _synth_video(p)) is not None:
            found.append(ClipSource(v, src, synth_style=_synth_style(p), name=p.name))
    return found


# ---------------------------------------------------------------- audio helpers
def frame_envelope(wav: np.ndarray, sr: int, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Loudness per video frame: RMS of the samples in [i, i + 1) / fps in dB re full scale.

    wav (S,) float32 -> (n_frames,) float32, floored at -100 dB; frames past the end are silence.
    """
    wav = np.asarray(wav, dtype=np.float64)
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(np.int64)
    need = int(edges[-1])
    if wav.size < need:
        wav = np.concatenate([wav, np.zeros(need - wav.size)])
    csum = np.concatenate([[0.0], np.cumsum(wav[:need] ** 2)])
    power = (csum[edges[1:]] - csum[edges[:-1]]) / np.maximum(np.diff(edges), 1)
    return (10.0 * np.log10(np.maximum(power, 1e-10))).astype(np.float32)


# ---------------------------------------------------------------- building
def _clip_id(src: ClipSource, taken: set[str]) -> str:
    base = f"{src.source}-{_slug(src.name)}"
    cid, k = base, 2
    while cid in taken:
        cid, k = f"{base}-{k}", k + 1
    taken.add(cid)
    return cid


def _clip_key(src: ClipSource, cfg: CorpusConfig, video_sha: str, audio_sha: str | None) -> str:
    return params_hash({
        "video": video_sha, "audio": audio_sha, "size": cfg.size, "fps": cfg.fps,
        "representation": asdict(cfg.representation), "encoder": cfg.audio.to_dict(),
        "version": CORPUS_VERSION,
    })


def _stored_meta(path: Path) -> dict[str, Any] | None:
    """{"key", "info"} recorded in an existing clip npz, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        ClipInfo(**meta["info"])
        return meta
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def _preprocess_config(cfg: CorpusConfig) -> Any:
    from erlnet.preprocess.pipeline import PreprocessConfig

    return PreprocessConfig(size=cfg.size, fps=cfg.fps, tracking_only=True, representation=cfg.representation,
                            audio=cfg.audio)


def process_clip(src: ClipSource, clip_id: str, root: Path, cfg: CorpusConfig, key: str) -> ClipInfo:
    """Track one clip (cached in root/cache/<id>) and write root/clips/<id>.npz. Raises on failure."""
    from erlnet.preprocess.pipeline import run_preprocess

    cache = root / "cache" / clip_id
    results = run_preprocess(src.video, cache, _preprocess_config(cfg), show_progress=False)
    track = next(r.info for r in results if r.name == "track")
    subject = Subject(cache)
    tr = subject.tracking()
    n = len(subject)
    arrays: dict[str, np.ndarray] = {
        "expression": tr["expression"].astype(np.float32),
        "neutral": tr["neutral"].astype(np.float32),
        "blink": tr["blink"].astype(np.float32),
        "rotation": tr["rotation"].astype(np.float32),
        "translation": tr["translation"].astype(np.float32),
        "valid": tr["valid"].astype(bool),
    }
    wav, audio_file = None, None
    if subject.manifest.has_audio:
        wav = load_audio(cache / "audio.wav", sr=AUDIO_SR)
        arrays["audio"] = subject.audio_features(cfg.audio.setup().cache_key).astype(np.float32)
    elif src.audio is not None:
        wav = load_audio(src.audio, sr=AUDIO_SR)
        if wav is None or wav.size == 0:
            raise InputError(f"{src.audio}: holds no audio")
        arrays["audio"] = cfg.audio.setup().encode(wav, AUDIO_SR, n_frames=n).astype(np.float32)
        audio_file = str(src.audio)
        if abs(wav.size / AUDIO_SR - n / cfg.fps) > 0.5:
            log.warning("%s: speech is %.2f s but the video %.2f s; features are padded or cut to the video",
                        src.audio, wav.size / AUDIO_SR, n / cfg.fps)
    if wav is not None:
        arrays["envelope"] = frame_envelope(wav, AUDIO_SR, n, cfg.fps)
    labels = parse_clip_name(src.name, src.video)
    emotion = labels["emotion"]
    speaker = labels["speaker"]
    style = emotion
    if src.synth_style is not None:
        speaker, style = "synth", src.synth_style
        emotion = src.synth_style if src.synth_style in EMOTIONS else None
    info = ClipInfo(
        id=clip_id, source=src.source, speaker=speaker or clip_id, video=str(src.video),
        file=f"clips/{clip_id}.npz", n_frames=n, fps=cfg.fps, has_audio=wav is not None, audio=audio_file,
        emotion=emotion, style=style, tracked_fraction=float(track["tracked_fraction"]),
    )
    write_clip(root, info, arrays, key)
    if not cfg.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return info


def build_corpus(
    paths: Sequence[str | Path], root: str | Path, config: CorpusConfig | None = None, show_progress: bool = True
) -> BuildReport:
    """Add the clips under `paths` to the corpus at `root` (created if needed; resumable).

    A clip whose npz is up to date is skipped; a clip that fails is logged, listed under "failed"
    in corpus.json and left out, so one bad clip never stops a corpus. Clips previously in the corpus
    but not named now are kept.
    """
    cfg = config or CorpusConfig()
    root = Path(root)
    sources = discover_clips(paths, cfg.audio_dir)
    if not sources:
        raise InputError("no clips given")
    old = _read_json(root) if (root / "corpus.json").exists() else None
    # A first build that was interrupted has clips/ and cache/ but no corpus.json yet: resume it.
    if old is None and root.exists() and not {p.name for p in root.iterdir()} <= _OWN_ENTRIES:
        raise InputError(f"{root}: exists and is not an erlnet motion corpus; choose an empty or new directory")
    if old is not None:
        _check_compatible(old, cfg, root)
    root.mkdir(parents=True, exist_ok=True)
    clips: dict[str, ClipInfo] = {c["id"]: ClipInfo(**c) for c in (old or {}).get("clips", [])}
    by_video = {(c.video, c.source): c.id for c in clips.values()}
    taken = set(clips)
    added, skipped, failed = [], [], []
    for src in progress(sources, total=len(sources), desc="corpus", enabled=show_progress, unit="clip"):
        cid = by_video.get((str(src.video), src.source)) or _clip_id(src, taken)
        try:
            key = _clip_key(src, cfg, file_sha256(src.video), file_sha256(src.audio) if src.audio else None)
            npz = root / "clips" / f"{cid}.npz"
            stored = _stored_meta(npz)
            if stored is not None and stored.get("key") == key:
                clips[cid] = ClipInfo(**stored["info"])
                skipped.append(cid)
                continue
            clips[cid] = process_clip(src, cid, root, cfg, key)
            added.append(cid)
        except Exception as exc:  # noqa: BLE001 (one bad clip must not stop a corpus of hundreds)
            reason = str(exc) if isinstance(exc, ErlnetError) else f"{type(exc).__name__}: {exc}"
            log.warning("skipped %s: %s", src.video, reason)
            failed.append({"video": str(src.video), "reason": reason})
            clips.pop(cid, None)
            (root / "clips" / f"{cid}.npz").unlink(missing_ok=True)
    if not clips:
        raise InputError(f"none of the {len(sources)} clips could be used; first failure: {failed[0]['reason']}")
    infos = finalise(root, cfg, list(clips.values()), failed)
    return BuildReport(root, added, skipped, failed, len(infos), sum(c.heldout for c in infos))


def finalise(root: Path, cfg: CorpusConfig, clips: list[ClipInfo], failed: list[dict[str, str]]) -> list[ClipInfo]:
    """Choose the held-out clips, compute the speaker neutral faces and write corpus.json."""
    infos = sorted(clips, key=lambda c: c.id)
    held = set(choose_heldout(infos, cfg.holdout_fraction, cfg.min_clips_for_fraction))
    for c in infos:
        c.heldout = c.id in held
    neutrals = speaker_neutrals(root, infos, cfg.representation)
    save_npz(root / "speakers.npz", **{_speaker_key(s): n for s, n in neutrals.items()})
    _write_json(root, cfg, infos, failed)
    return infos


def write_clip(root: Path, info: ClipInfo, arrays: dict[str, np.ndarray], key: str = "") -> None:
    """Store one clip's arrays (the keys of `ClipData`) as root/<info.file>; for corpora made from
    arrays (ground-truth synthetic motion, tests) rather than tracked videos. Call `finalise` after."""
    need = {"expression", "neutral", "blink", "rotation", "translation", "valid"}
    missing = sorted(need - set(arrays))
    if missing:
        raise InputError(f"clip {info.id}: missing arrays {', '.join(missing)}")
    meta = {"key": key, "info": asdict(info)}
    save_npz(root / info.file, meta=np.array(json.dumps(meta)), **arrays)


def _check_compatible(old: dict[str, Any], cfg: CorpusConfig, root: Path) -> None:
    want = {"size": cfg.size, "fps": cfg.fps, "representation": asdict(cfg.representation),
            "audio_encoder": cfg.audio.to_dict()}
    have = {k: old["config"].get(k) for k in want}
    diff = [k for k in want if json.loads(json.dumps(want[k])) != have[k]]
    if diff:
        raise InputError(f"{root}: corpus was built with other {', '.join(diff)}; use a new output directory")


def _write_json(root: Path, cfg: CorpusConfig, infos: list[ClipInfo], failed: list[dict[str, str]]) -> None:
    rep = cfg.representation.setup()
    speakers: dict[str, dict[str, Any]] = {}
    for c in infos:
        s = speakers.setdefault(c.speaker, {"clips": 0, "sources": []})
        s["clips"] += 1
        if c.source not in s["sources"]:
            s["sources"].append(c.source)
    doc = {
        "schema": CORPUS_SCHEMA,
        "schema_version": CORPUS_VERSION,
        "config": {
            "size": cfg.size, "fps": cfg.fps, "representation": asdict(cfg.representation),
            "audio_encoder": cfg.audio.to_dict(), "holdout_fraction": cfg.holdout_fraction,
            "min_clips_for_fraction": cfg.min_clips_for_fraction,
        },
        "expression_dim": rep.dim,
        "representation": rep.name,
        "audio_cache_key": cfg.audio.setup().cache_key,
        "audio_dim": cfg.audio.setup().feature_dim,
        "heldout": [c.id for c in infos if c.heldout],
        "heldout_rule": (f"whole clips: per source with speech, {cfg.holdout_fraction:.0%} of the clips when it "
                         f"has >= {cfg.min_clips_for_fraction}, else one clip (sources of >= 2 clips); sources "
                         "without speech and with emotion labels hold out all clips of one speaker; clips are "
                         "ranked by sha256 of their id"),
        "speakers": speakers,
        "clips": [asdict(c) for c in infos],
        "failed": failed,
    }
    atomic_write_text(root / "corpus.json", json.dumps(doc, indent=2, sort_keys=True))


def _read_json(root: Path) -> dict[str, Any]:
    path = root / "corpus.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{root}: not an erlnet motion corpus (no corpus.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: corrupt ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != CORPUS_SCHEMA:
        raise FormatError(f"{root}: not an erlnet motion corpus")
    if doc.get("schema_version") != CORPUS_VERSION:
        raise FormatError(f"{root}: corpus version {doc.get('schema_version')} is not supported "
                          f"(this erlnet reads {CORPUS_VERSION}); rebuild it with `erlnet corpus`")
    return doc


# ---------------------------------------------------------------- held-out choice
def _rank(clip_id: str) -> str:
    return hashlib.sha256(clip_id.encode()).hexdigest()


def choose_heldout(clips: Sequence[ClipInfo], fraction: float = 0.1, min_clips_for_fraction: int = 20) -> list[str]:
    """Ids of held-out clips: whole clips, reproducible (ranked by sha256 of the id).

    Sources with speech: `fraction` of the clips when they have >= min_clips_for_fraction, else one
    (only when the source has >= 2 clips, so a single clip is never lost to training). Sources
    without speech whose clips carry emotion labels (MEAD): all clips of one speaker, so style
    accuracy is measured on a person the classifier never saw; other silent sources: one clip.
    """
    by_source: dict[str, list[ClipInfo]] = {}
    for c in clips:
        by_source.setdefault(c.source, []).append(c)
    out: list[str] = []
    for group in by_source.values():
        speech = sorted((c for c in group if c.has_audio), key=lambda c: _rank(c.id))
        silent = [c for c in group if not c.has_audio]
        if len(speech) >= min_clips_for_fraction:
            out += [c.id for c in speech[: max(1, int(round(fraction * len(speech))))]]
        elif len(speech) >= 2:
            out.append(speech[0].id)
        labelled = [c for c in silent if c.emotion is not None]
        speakers = sorted({c.speaker for c in labelled}, key=_rank)
        if len(speakers) >= 2:
            out += [c.id for c in labelled if c.speaker == speakers[0]]
        elif len(silent) >= 2:
            out.append(min(silent, key=lambda c: _rank(c.id)).id)
    return sorted(out)


# ---------------------------------------------------------------- speaker neutral faces
def _speaker_key(speaker: str) -> str:
    return "neutral__" + _slug(speaker)


def speaker_neutrals(
    root: Path, clips: Sequence[ClipInfo], representation: LandmarkRepresentationConfig
) -> dict[str, np.ndarray]:
    """One neutral face (478, 3) float32 metres per speaker.

    A clip's own neutral (its calm frames) keeps any expression held through the whole clip (an
    angry MEAD clip frowns even when calm), which would hide that emotion from the expressions. So
    the speaker's neutral comes from the clips labelled "neutral" when there are any, else from all
    its clips: clip neutrals aligned on rigid points and median-combined.
    """
    out: dict[str, np.ndarray] = {}
    by_speaker: dict[str, list[ClipInfo]] = {}
    for c in clips:
        by_speaker.setdefault(c.speaker, []).append(c)
    for speaker, group in by_speaker.items():
        calm = [c for c in group if c.emotion == "neutral"] or group
        shapes = [_load_neutral(root / c.file) for c in calm]
        out[speaker] = _combine_shapes(shapes)
    return out


def _load_neutral(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z["neutral"].astype(np.float64)


def _combine_shapes(shapes: Sequence[np.ndarray]) -> np.ndarray:
    """Median of (N, 3) shapes after aligning each to the first on rigid points -> (N, 3) float32."""
    ref = shapes[0]
    aligned = [robust_similarity(s[tp.RIGID], ref[tp.RIGID]).apply(s) for s in shapes]
    return normalise_canonical(np.median(np.stack(aligned), axis=0)).astype(np.float32)


def rereference(
    expression: np.ndarray, neutral_from: np.ndarray, neutral_to: np.ndarray, rep: MotionRepresentation
) -> np.ndarray:
    """Re-express expressions (T, D) relative to another neutral face of the same person.

    The clip's canonical frame is aligned to the target's on rigid points first (each clip fits its
    own canonical frame), so only the true expression change remains. -> (T, D) float32.
    """
    canon = rep.decode(expression, neutral_from)
    sim = robust_similarity(np.asarray(neutral_from, np.float64)[tp.RIGID], np.asarray(neutral_to, np.float64)[tp.RIGID])
    return rep.encode(sim.apply(canon.astype(np.float64)), neutral_to)


# ---------------------------------------------------------------- reading
class Corpus:
    """Read access to a motion corpus built by `build_corpus`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such motion corpus directory")
        self.doc = _read_json(self.root)
        self.clips = [ClipInfo(**c) for c in self.doc["clips"]]
        self._by_id = {c.id: c for c in self.clips}
        self.representation_config = LandmarkRepresentationConfig(**self.doc["config"]["representation"])
        self.representation = self.representation_config.setup()
        self.audio_config = config_from_dict(self.doc["config"]["audio_encoder"])
        self._neutrals: dict[str, np.ndarray] | None = None

    @property
    def fps(self) -> float:
        return float(self.doc["config"]["fps"])

    @property
    def expression_dim(self) -> int:
        return int(self.doc["expression_dim"])

    @property
    def audio_dim(self) -> int:
        return int(self.doc["audio_dim"])

    @property
    def audio_cache_key(self) -> str:
        return str(self.doc["audio_cache_key"])

    def info(self, clip_id: str) -> ClipInfo:
        try:
            return self._by_id[clip_id]
        except KeyError:
            raise InputError(f"{self.root}: no clip {clip_id!r}") from None

    def select(
        self, split: Literal["train", "heldout", "all"] = "all", audio: bool | None = None
    ) -> list[ClipInfo]:
        """Clips of a split; `audio=True/False` keeps only clips with/without speech."""
        out = [c for c in self.clips if split == "all" or c.heldout == (split == "heldout")]
        return [c for c in out if audio is None or c.has_audio == audio]

    def speaker_neutral(self, speaker: str) -> np.ndarray:
        """Neutral face (478, 3) float32 metres of a speaker."""
        if self._neutrals is None:
            self._neutrals = load_npz(self.root / "speakers.npz")
        key = _speaker_key(speaker)
        if key not in self._neutrals:
            raise FormatError(f"{self.root}: no neutral face for speaker {speaker!r}; rebuild the corpus")
        return self._neutrals[key]

    def load(self, clip: str | ClipInfo, reference: Literal["speaker", "clip"] = "speaker") -> ClipData:
        """Arrays of a clip; with reference="speaker" the expressions are relative to the speaker's
        neutral face (`speaker_neutrals`), else to the clip's own."""
        info = self.info(clip) if isinstance(clip, str) else clip
        z = load_npz(self.root / info.file)
        expr, neutral = z["expression"], z["neutral"]
        if reference == "speaker":
            target = self.speaker_neutral(info.speaker)
            expr = rereference(expr, neutral, target, self.representation)
            neutral = target
        n = len(expr)
        for name in ("blink", "rotation", "translation", "valid", "audio", "envelope"):
            if name in z and len(z[name]) != n:
                raise FormatError(f"{self.root / info.file}: {name} has {len(z[name])} frames, expression {n}")
        return ClipData(
            info=info, expression=expr.astype(np.float32), neutral=neutral.astype(np.float32),
            blink=z["blink"], rotation=z["rotation"], translation=z["translation"], valid=z["valid"],
            audio=z.get("audio"), envelope=z.get("envelope"),
        )


# ---------------------------------------------------------------- synthetic clips
def make_synth_clips(
    out: Path, styles: Sequence[str], per_style: int = 1, seconds: float = 6.0, size: int = 256, seed: int = 0,
    show_progress: bool = False,
) -> list[Path]:
    """Generate synthetic talking subjects (one folder each, reused when present) for the corpus."""
    from erlnet.synth import SynthConfig, generate

    paths = []
    for k, style in enumerate(styles):
        for j in range(per_style):
            s = seed + 1000 * k + j
            d = out / f"{style}_{j:02d}"
            if _synth_video(d) is None:
                if d.exists():
                    shutil.rmtree(d)
                generate(SynthConfig(seconds=seconds, style=style, seed=s, size=size), d, progress=show_progress)
                if _synth_style(d) is None:  # remember the style for the corpus labels
                    atomic_write_text(d / "synth.json", json.dumps({"style": style, "seed": s}))
            paths.append(d)
    return paths


def corpus_summary(corpus: Corpus) -> dict[str, Any]:
    """Counts for reports: clips, minutes, speakers, held-out, failed, per source."""
    per_source: dict[str, dict[str, float]] = {}
    for c in corpus.clips:
        s = per_source.setdefault(c.source, {"clips": 0, "seconds": 0.0, "with_speech": 0, "heldout": 0})
        s["clips"] += 1
        s["seconds"] += c.n_frames / c.fps
        s["with_speech"] += int(c.has_audio)
        s["heldout"] += int(c.heldout)
    total = sum(s["seconds"] for s in per_source.values())
    return {"clips": len(corpus.clips), "minutes": math.floor(total / 6) / 10, "speakers": len(corpus.doc["speakers"]),
            "heldout": len(corpus.doc["heldout"]), "failed": len(corpus.doc["failed"]), "sources": per_source}


# ---------------------------------------------------------------- a procedural corpus (tests, benchmarks)
def _toy_neutral(rng: np.random.Generator) -> np.ndarray:
    """A face-sized (478, 3) point cloud in the canonical frame, eye corners 33/263 0.095 m apart."""
    pts = rng.normal(0.0, 0.04, size=(tp.N_LANDMARKS, 3))
    pts[33], pts[263] = (-0.0475, -0.02, 0.0), (0.0475, -0.02, 0.0)
    pts[tp.FOREHEAD_TOP], pts[tp.CHIN] = (0.0, -0.09, 0.01), (0.0, 0.09, 0.01)
    # Closed lips facing each other, so the inner-lip gap grows with the lower lip's displacement.
    pts[tp.UPPER_INNER_LIP] = [(-0.01, 0.045, -0.01), (0.0, 0.045, -0.012), (0.01, 0.045, -0.01)]
    pts[tp.LOWER_INNER_LIP] = [(-0.01, 0.046, -0.01), (0.0, 0.046, -0.012), (0.01, 0.046, -0.01)]
    return normalise_canonical(pts).astype(np.float32)


def _toy_speech(rng: np.random.Generator, seconds: float, sr: int = AUDIO_SR) -> np.ndarray:
    """Voiced bursts (syllables at ~4 Hz with random gaps): a harmonic tone under a smooth envelope."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    env = np.zeros(n)
    pos = 0.1
    while pos < seconds - 0.1:
        dur = rng.uniform(0.12, 0.3)
        a, b = int(pos * sr), min(n, int((pos + dur) * sr))
        env[a:b] = np.sin(np.linspace(0, np.pi, b - a)) * rng.uniform(0.5, 1.0)
        pos += dur + rng.uniform(0.03, 0.25)
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.3 * env * tone / 2.6 + 1e-3 * rng.normal(size=n)).astype(np.float32)


_TOY_STYLES: dict[str, dict[str, float]] = {
    # mouth gain, corner lift (smile), brow lift, head motion (deg)
    "neutral": {"gain": 1.0, "smile": 0.0, "brow": 0.0, "head": 2.0},
    "happy": {"gain": 1.2, "smile": 0.06, "brow": 0.01, "head": 3.0},
    "angry": {"gain": 0.8, "smile": -0.03, "brow": -0.05, "head": 1.0},
    "surprised": {"gain": 1.4, "smile": 0.0, "brow": 0.07, "head": 2.5},
}


def toy_clip(
    rng: np.random.Generator, seconds: float, style: str, neutral: np.ndarray, audio: AudioEncoderConfig | None,
    fps: float = 25.0,
) -> dict[str, np.ndarray]:
    """Arrays of one procedural clip (the keys of `ClipData`): the jaw and lower lip drop with the loudness
    of the speech, a style adds a constant smile/brow offset and sets the head motion. With `audio=None`
    the clip has no speech arrays (a style-only clip); its mouth then follows a random envelope."""
    st = _TOY_STYLES[style]
    n = int(seconds * fps)
    wav = _toy_speech(rng, seconds)
    env_db = frame_envelope(wav, AUDIO_SR, n, fps)
    opening = np.clip((env_db + 45.0) / 30.0, 0.0, 1.0) * st["gain"]
    disp = np.zeros((n, tp.N_LANDMARKS, 3))
    jaw = np.concatenate([tp.LOWER_INNER_LIP, [84, 17, 314, 152, 175, 199, 200]])
    disp[:, jaw, 1] += 0.25 * opening[:, None]
    disp[:, [61, 78, 291, 308], 1] -= st["smile"]
    disp[:, [61, 78], 0] -= 0.5 * st["smile"]
    disp[:, [291, 308], 0] += 0.5 * st["smile"]
    disp[:, tp.BROWS, 1] -= st["brow"]
    disp += rng.normal(0.0, 0.002, size=disp.shape)
    t = np.arange(n) / fps
    ang = np.radians(st["head"]) * np.stack(
        [np.sin(2 * np.pi * f * t + p) for f, p in zip(rng.uniform(0.2, 0.6, 3), rng.uniform(0, 6, 3), strict=True)],
        axis=1)
    from erlnet.face.pose import matrix_from_euler

    blink = np.zeros(n, np.float32)
    for b in rng.choice(max(1, n - 4), size=max(1, n // 75), replace=False):
        blink[b:b + 4] = (0.5, 1.0, 1.0, 0.5)[: len(blink[b:b + 4])]
    out = {
        "expression": disp.reshape(n, -1).astype(np.float32),
        "neutral": neutral.astype(np.float32),
        "blink": blink,
        "rotation": matrix_from_euler(ang).astype(np.float32),
        "translation": (np.array([0.0, 0.0, 0.6]) + 0.002 * np.sin(t[:, None] * np.array([1.1, 0.7, 0.5]))
                        ).astype(np.float32),
        "valid": np.ones(n, bool),
    }
    if audio is not None:
        out["audio"] = audio.setup().encode(wav, AUDIO_SR, n_frames=n).astype(np.float32)
        out["envelope"] = env_db
    return out


def toy_corpus(
    root: str | Path, n_speech: int = 4, n_style: int = 2, seconds: float = 3.0, seed: int = 0,
    config: CorpusConfig | None = None,
) -> Corpus:
    """A small procedural corpus (no video, no tracking) for tests and benchmarks: `n_speech` clips
    with speech from speaker "toy" (styles cycle neutral/happy/angry/surprised) and `n_style` silent,
    emotion-labelled style clips per emotion of two speakers "toyA"/"toyB". Expressions use all 478
    points of the landmark representation."""
    cfg = config or CorpusConfig()
    if cfg.representation.points != "all":
        raise InputError("toy_corpus writes all-point landmark expressions")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise InputError(f"{root}: exists and is not empty")
    rng = np.random.default_rng(seed)
    neutrals = {s: _toy_neutral(rng) for s in ("toy", "toyA", "toyB")}
    styles = list(_TOY_STYLES)
    infos: list[ClipInfo] = []

    def add(cid: str, speaker: str, style: str, speech: bool, emotion: str | None) -> None:
        arrays = toy_clip(rng, seconds, style, neutrals[speaker], cfg.audio if speech else None, cfg.fps)
        info = ClipInfo(id=cid, source="toy" if speech else "toy_style", speaker=speaker, video="",
                        file=f"clips/{cid}.npz", n_frames=len(arrays["expression"]), fps=cfg.fps,
                        has_audio=speech, emotion=emotion, style=style)
        write_clip(root, info, arrays)
        infos.append(info)

    for i in range(n_speech):
        style = styles[i % len(styles)]
        add(f"toy-{i:03d}", "toy", style, True, style)
    for speaker in ("toyA", "toyB"):
        for style in styles:
            for j in range(n_style):
                add(f"toy_style-{speaker}_{style}_{j}", speaker, style, False, style)
    finalise(root, cfg, infos, [])
    return Corpus(root)
