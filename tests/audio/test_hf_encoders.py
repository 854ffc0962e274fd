"""wav2vec 2.0 / HuBERT encoders on tiny random-weight stand-ins saved with `save_pretrained` in tmp dirs.

The stand-ins have the released models' CNN geometry (7 layers, 25 ms receptive field, 20 ms hop)
but 32-wide, 2-layer transformers, so every test runs in well under a second once transformers is
imported. Also covers the shared helpers in `erlnet.audio.pretrained`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from erlnet.audio.base import (
    AudioEncoder,
    AudioEncoderConfig,
    MelFormantConfig,
    config_from_dict,
    encoder_from_dict,
)
from erlnet.audio.hf import HubertConfig, HubertEncoder, Wav2Vec2Config, Wav2Vec2Encoder
from erlnet.audio.pretrained import plan_windows, states_needed, states_to_frames
from erlnet.errors import FormatError, InputError

SR = 16000
HIDDEN = 32


def _save(kind: str, root: Path, seed: int = 0, normalize: bool | None = None, **overrides: object) -> Path:
    """A tiny random-weight Wav2Vec2Model / HubertModel written with save_pretrained -> its directory."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    cfg_cls, model_cls = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
    }[kind]
    cfg = cfg_cls(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, **overrides)
    torch.manual_seed(seed)
    model_cls(cfg).eval().save_pretrained(root)
    if normalize is not None:
        transformers.Wav2Vec2FeatureExtractor(do_normalize=normalize).save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hf")
    return {
        "wav2vec2": _save("wav2vec2", base / "w2v"),
        "hubert": _save("hubert", base / "hub"),
        "wav2vec2_seed1": _save("wav2vec2", base / "w2v_seed1", seed=1),
        # Per-frame norms (the "large" variant): layer 0 then only sees +-4 frames, so chunking is exact there.
        "local": _save("wav2vec2", base / "local", feat_extract_norm="layer", do_stable_layer_norm=True),
        "raw": _save("wav2vec2", base / "raw", normalize=False, feat_extract_norm="layer", do_stable_layer_norm=True),
    }


def _config(kind: str, path: Path | str, **kw: object) -> Wav2Vec2Config | HubertConfig:
    return (HubertConfig if kind == "hubert" else Wav2Vec2Config)(model_path=str(path), **kw)


def _noise(seconds: float, sr: int = SR, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


# ---------------------------------------------------------------- shared helpers
def test_plan_windows_tiles_states_with_context() -> None:
    assert plan_windows(30, 50, 5) == [(0, 50, 0, 30)]
    for n, window, ctx in [(120, 50, 5), (101, 20, 3), (51, 50, 0), (1000, 7, 3)]:
        plan = plan_windows(n, window, ctx)
        kept = np.concatenate([np.arange(k0, k1) for _, _, k0, k1 in plan])
        assert kept.tolist() == list(range(n))  # kept ranges tile [0, n) in order
        for i, (start, stop, k0, k1) in enumerate(plan):
            assert stop - start == window and start <= k0 < k1 <= stop
            assert k0 - start >= (ctx if i else 0)  # left context (none needed at the audio start)
            assert stop - k1 >= ctx or k1 == n  # right context; the caller pads past the end
    with pytest.raises(InputError, match="twice its context"):
        plan_windows(100, 10, 5)


def test_states_to_frames_interpolates_at_frame_centres() -> None:
    first, step, fps = 0.0125, 0.02, 25.0
    times = first + step * np.arange(60)
    states = np.stack([times, -2 * times], axis=1)  # a linear ramp is reproduced exactly
    out = states_to_frames(states, first, step, fps, 20)
    centres = (np.arange(20) + 0.5) / fps
    assert out.shape == (20, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], centres, atol=1e-6)
    np.testing.assert_allclose(out[:, 1], -2 * centres, atol=1e-6)
    assert states_needed(20, fps, first, step) == 40  # state 39 (0.7925 s) is the first after the last centre
    held = states_to_frames(states[:3], first, step, fps, 5)  # past the states: held at the last one
    np.testing.assert_allclose(held[-1], states[2], atol=1e-6)
    assert states_to_frames(states[:1], first, step, fps, 4).shape == (4, 2)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer": 1.5}, "layer must be an integer"),
    ({"layer": True}, "layer must be an integer"),
    ({"fps": 0}, "fps must be a finite number > 0"),
    ({"device": "gpu"}, "device must be"),
    ({"chunk_s": 2.0, "context_s": 1.0}, "chunk_s .* must exceed 2 \\* context_s"),
    ({"context_s": -1.0}, "context_s must be a finite number >= 0"),
    ({"model_path": 3}, "model_path must be a path"),
])
def test_invalid_config_is_input_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Wav2Vec2Config(**kwargs)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_config_dict_round_trip(models: dict[str, Path], kind: str) -> None:
    cfg = _config(kind, models[kind], layer=1, fps=30, chunk_s=8.0)
    d = json.loads(json.dumps(cfg.to_dict()))  # manifests are JSON
    assert d["type"] == kind and d["model_path"] == str(models[kind]) and d["fps"] == 30.0
    assert config_from_dict(d) == cfg
    enc = encoder_from_dict(d)
    assert isinstance(enc, AudioEncoder) and enc.cache_key == cfg.setup().cache_key and enc.fps == 30.0
    assert config_from_dict({"type": kind}) == _config(kind, "")  # defaults; path needed only by setup
    assert Wav2Vec2Config(model_path=models[kind]).model_path == str(models[kind])  # Path objects accepted
    with pytest.raises(FormatError, match="unknown fields .*n_mels"):
        config_from_dict({"type": kind, "n_mels": 80})
    with pytest.raises(FormatError, match="device must be"):
        config_from_dict({"type": kind, "device": "tpu"})


def test_union_parses_on_the_command_line(models: dict[str, Path]) -> None:
    tyro = pytest.importorskip("tyro")

    @dataclass
    class Cmd:
        audio: AudioEncoderConfig = field(default_factory=MelFormantConfig)

    assert tyro.cli(Cmd, args=[]).audio == MelFormantConfig()
    args = ["audio:hubert", "--audio.model-path", str(models["hubert"]), "--audio.layer", "1"]
    assert tyro.cli(Cmd, args=args).audio == HubertConfig(model_path=str(models["hubert"]), layer=1)
    args = ["audio:wav2vec2", "--audio.model-path", "m", "--audio.device", "cpu"]
    assert tyro.cli(Cmd, args=args).audio == Wav2Vec2Config(model_path="m", device="cpu")


# ---------------------------------------------------------------- encoding
@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_shape_dtype_and_rates(models: dict[str, Path], kind: str) -> None:
    enc = _config(kind, models[kind]).setup()
    assert isinstance(enc, HubertEncoder if kind == "hubert" else Wav2Vec2Encoder)
    assert enc.feature_dim == HIDDEN and enc.fps == 25.0 and enc.layer == 2
    for sr, seconds, rows in [(SR, 1.03, 25), (8000, 2.0, 50), (44100, 3.3, 82), (SR, 0.04, 1)]:
        out = enc.encode(_noise(seconds, sr), sr)
        assert out.shape == (rows, HIDDEN) and out.dtype == np.float32 and np.isfinite(out).all(), (sr, seconds)
    wav = _noise(1.0)
    assert enc.encode(wav, SR, n_frames=7).shape == (7, HIDDEN)
    padded = enc.encode(wav, SR, n_frames=40)  # past the audio: as if silence followed
    assert padded.shape == (40, HIDDEN) and np.isfinite(padded).all()
    fast = _config(kind, models[kind], fps=30.0).setup()
    assert fast.encode(wav, SR).shape == (30, HIDDEN)
    with pytest.raises(InputError, match="shorter than one video frame"):
        enc.encode(np.zeros(100, np.float32), SR)


def test_deterministic_and_depends_on_audio(models: dict[str, Path]) -> None:
    cfg = _config("wav2vec2", models["wav2vec2"])
    a, b = _noise(2.0, seed=1), _noise(2.0, seed=2)
    fa = cfg.setup().encode(a, SR)
    np.testing.assert_array_equal(fa, cfg.setup().encode(a, SR))  # new instance, same model: same rows
    fb = cfg.setup().encode(b, SR)
    assert np.abs(fa - fb).mean() > 0.05 * np.abs(fa).mean()
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)).astype(np.float32)
    assert np.abs(cfg.setup().encode(tone, SR) - fa).mean() > 0.05 * np.abs(fa).mean()


@pytest.mark.parametrize(("kind", "layer"), [("wav2vec2", -1), ("hubert", -1), ("local", 0)])
def test_rows_are_time_aligned(models: dict[str, Path], kind: str, layer: int) -> None:
    enc = _config("hubert" if kind == "hubert" else "wav2vec2", models[kind], layer=layer).setup()
    noise = _noise(3.0, seed=3)
    tone = noise.copy()
    # 80 ms of a 1 kHz tone of the same RMS replaces the noise, centred on 1.64 s = between frames 40 and 41
    # (same RMS, so the input normalisation and the CNN's group norm hardly change elsewhere).
    t = np.arange(int(0.08 * SR)) / SR
    tone[int(1.60 * SR) : int(1.68 * SR)] = 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 1000 * t)
    change = np.linalg.norm(enc.encode(tone, SR) - enc.encode(noise, SR), axis=1)
    assert int(np.argmax(change)) in (40, 41)
    near = change[37:45].mean()
    assert near > 5 * change[:30].mean() and near > 5 * change[52:].mean()
    idx = np.arange(30, 52)
    centroid = float((idx * change[idx]).sum() / change[idx].sum())
    assert abs(centroid - 40.5) < 0.5  # symmetric about the tone's centre: no timing offset


def test_chunked_long_audio(models: dict[str, Path]) -> None:
    wav = _noise(12.3, seed=5)
    # Layer 0 of the per-frame-norm model depends on +-4 states only: chunking must not change it.
    whole = _config("wav2vec2", models["local"], layer=0).setup().encode(wav, SR)
    chunked = _config("wav2vec2", models["local"], layer=0, chunk_s=1.0, context_s=0.2).setup().encode(wav, SR)
    assert whole.shape == chunked.shape == (307, HIDDEN)
    np.testing.assert_allclose(chunked, whole, atol=1e-4, rtol=1e-4)
    # The last layer attends globally, so chunks differ a little, but the length is exact.
    deep = _config("wav2vec2", models["wav2vec2"], chunk_s=1.0, context_s=0.2).setup()
    out = deep.encode(_noise(12.3, sr=44100), 44100)
    assert out.shape == (307, HIDDEN) and np.isfinite(out).all()
    assert deep.encode(wav, SR, n_frames=500).shape == (500, HIDDEN)


def test_input_normalisation_follows_preprocessor_config(models: dict[str, Path]) -> None:
    wav = _noise(1.5, seed=6)
    # No preprocessor_config.json: zero-mean unit-variance input, as Wav2Vec2FeatureExtractor's default.
    norm = _config("wav2vec2", models["local"]).setup()
    np.testing.assert_allclose(norm.encode(3 * wav + 0.2, SR), norm.encode(wav, SR), atol=1e-4)
    # do_normalize: false. A DC offset then reaches the per-frame layer norms as a per-channel shift.
    raw = _config("wav2vec2", models["raw"]).setup()
    assert np.abs(raw.encode(wav + 0.2, SR) - raw.encode(wav, SR)).mean() > 1e-2


def test_cache_key(models: dict[str, Path], tmp_path: Path) -> None:
    key = _config("wav2vec2", models["wav2vec2"]).setup().cache_key
    assert key.startswith("Wav2Vec2Encoder-v1-")
    assert _config("wav2vec2", models["wav2vec2"]).setup().cache_key == key  # stable across instances
    assert _config("wav2vec2", models["wav2vec2"], layer=2, device="cpu").setup().cache_key == key  # -1 is layer 2
    copy = shutil.copytree(models["wav2vec2"], tmp_path / "copy")
    assert _config("wav2vec2", copy).setup().cache_key == key  # content, not the path
    others = {
        _config("wav2vec2", models["wav2vec2"], layer=0).setup().cache_key,
        _config("wav2vec2", models["wav2vec2"], layer=1).setup().cache_key,
        _config("wav2vec2", models["wav2vec2_seed1"]).setup().cache_key,  # same config.json, other weights
        _config("wav2vec2", models["wav2vec2"], fps=30.0).setup().cache_key,
        _config("wav2vec2", models["wav2vec2"], chunk_s=10.0).setup().cache_key,
        _config("hubert", models["hubert"]).setup().cache_key,
    }
    assert key not in others and len(others) == 6
    cfg_path = copy / "config.json"
    cfg_path.write_text(cfg_path.read_text().replace('"layer_norm_eps": 1e-05', '"layer_norm_eps": 1e-06'))
    assert _config("wav2vec2", copy).setup().cache_key != key


# ---------------------------------------------------------------- errors
def test_clear_errors(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs model_path"):
        Wav2Vec2Config().setup()
    with pytest.raises(InputError, match=f"model directory not found: {tmp_path / 'nope'}"):
        Wav2Vec2Config(model_path=str(tmp_path / "nope")).setup()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        Wav2Vec2Config(model_path=str(tmp_path / "file")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a Hugging Face model directory.*missing config.json"):
        Wav2Vec2Config(model_path=str(tmp_path / "empty")).setup()
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(models["wav2vec2"] / "config.json", no_weights)
    with pytest.raises(InputError, match="no model.safetensors or pytorch_model.bin"):
        Wav2Vec2Config(model_path=str(no_weights)).setup()
    with pytest.raises(InputError, match="holds a 'hubert' model, not a 'wav2vec2' model; use the 'hubert'"):
        Wav2Vec2Config(model_path=str(models["hubert"])).setup()
    with pytest.raises(InputError, match="layer 3 is out of range .*0..2"):
        Wav2Vec2Config(model_path=str(models["wav2vec2"]), layer=3).setup()
    with pytest.raises(InputError, match="layer -4 is out of range"):
        HubertConfig(model_path=str(models["hubert"]), layer=-4).setup()
    broken = shutil.copytree(models["wav2vec2"], tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match=f"cannot load the wav2vec2 model in {broken}"):
        Wav2Vec2Config(model_path=str(broken)).setup().encode(_noise(0.5), SR)


def test_missing_transformers_says_how_to_install(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    for cfg in (Wav2Vec2Config(model_path=str(models["wav2vec2"])), HubertConfig(model_path=str(models["hubert"]))):
        with pytest.raises(InputError, match=r"needs the 'transformers' package: pip install 'erlnet\[hubert\]'"):
            cfg.setup()


def test_configs_import_no_model_library() -> None:
    code = ("import sys, erlnet, erlnet.audio, erlnet.audio.hf, erlnet.audio.whisper; "
            "print(sorted(m for m in ('transformers', 'ctranslate2', 'faster_whisper', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

