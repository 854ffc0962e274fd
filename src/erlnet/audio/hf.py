"""wav2vec 2.0 and HuBERT hidden states as audio features, from local Hugging Face model directories.

`Wav2Vec2Config` / `HubertConfig` name a directory written by `save_pretrained` (config.json plus
model.safetensors or pytorch_model.bin, optionally preprocessor_config.json) and the hidden layer to
output. Nothing is ever downloaded (`local_files_only=True`); `transformers` is imported only when an
encoder is set up (`pip install 'erlnet[hubert]'`).

Timing. The CNN front end turns 16 kHz samples into states every `S` samples (the product of
`conv_stride`, 320 = 20 ms for the released models) each seeing `R` samples (the receptive field of
`conv_kernel`, 400 = 25 ms): state `j` covers samples `[j*S, j*S + R)`, centred on
`(j*S + R/2) / 16000` s. Rows for video frame `i` are linearly interpolated at `(i + 0.5) / fps` s.

Long audio is run in windows of `chunk_s` seconds that overlap by `2 * context_s`: each window keeps
only the states at least `context_s` from its ends, so self-attention memory stays bounded
(quadratic in the window length) while each kept state still sees context on both sides.

Layers. `layer` indexes `hidden_states` as transformers returns them: 0 is the input of the first
transformer layer, L the output of the last. The last layer suits models fine-tuned for ASR (e.g.
wav2vec2-base-960h); for self-supervised-only checkpoints, middle-to-upper layers (e.g. 6-9 of 12)
usually carry more phonetic detail.

Output: `(n_frames, hidden_size) float32`, hidden_size read from the model's config.json.
"""

from __future__ import annotations

import dataclasses
import math
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

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_FORMAT = "a Hugging Face model directory written by save_pretrained (config.json + model.safetensors or pytorch_model.bin)"
_MODELS = ModelCache()


@dataclass(frozen=True)
class _HFSpeechConfig:
    """Fields shared by the self-supervised speech models; see the module docstring."""

    kind: ClassVar[str]
    model_type: ClassVar[str]  # `model_type` in the directory's config.json

    model_path: str = ""  # local save_pretrained directory (required; never downloaded)
    layer: int = -1  # hidden state to output: 0 = transformer input (projected CNN features), L = last of L layers; negative counts from the end
    fps: float = DEFAULT_FPS  # feature rows per second (= video frame rate)
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; does not change the cache key
    chunk_s: float = 20.0  # audio per model call, s: bounds memory on long audio
    context_s: float = 1.0  # extra audio each side of a chunk whose states are dropped, s

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", check_path_field(self.model_path))
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)):
            raise InputError(f"audio encoder config: layer must be an integer, got {self.layer!r}")
        object.__setattr__(self, "layer", int(self.layer))
        check_number(self, "fps")
        check_device(self.device)
        check_number(self, "chunk_s")
        check_number(self, "context_s", allow_low=True)
        if 2.0 * self.context_s >= self.chunk_s:
            raise InputError(
                f"audio encoder config: chunk_s ({self.chunk_s:g}) must exceed 2 * context_s ({self.context_s:g})"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict with a `type` tag, for manifests."""
        return {"type": self.kind, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Wav2Vec2Config(_HFSpeechConfig):
    """wav2vec 2.0 hidden states (e.g. a saved facebook/wav2vec2-base-960h) from a local directory."""

    kind: ClassVar[str] = "wav2vec2"
    model_type: ClassVar[str] = "wav2vec2"

    def setup(self) -> Wav2Vec2Encoder:
        """Build the encoder: checks the directory and reads its config; weights load on first `encode`."""
        return Wav2Vec2Encoder(self)


@dataclass(frozen=True)
class HubertConfig(_HFSpeechConfig):
    """HuBERT hidden states (e.g. a saved facebook/hubert-base-ls960) from a local directory."""

    kind: ClassVar[str] = "hubert"
    model_type: ClassVar[str] = "hubert"

    def setup(self) -> HubertEncoder:
        """Build the encoder: checks the directory and reads its config; weights load on first `encode`."""
        return HubertEncoder(self)


class _HFSpeechEncoder(AudioEncoder):
    """Hidden states of a transformers speech model, resampled to video-frame rows."""

    VERSION = 1  # bump when the computation changes for the same config and model
    MODEL_CLASS: ClassVar[str]  # transformers model class name
    CONFIG_CLASS: ClassVar[str]  # and its config class

    def __init__(self, config: _HFSpeechConfig) -> None:
        self._cfg = c = config
        self._transformers = require("transformers", c.kind, "transformers", "hubert")
        self._dir = model_dir(c.model_path, c.kind, ["config.json"], _FORMAT)
        raw = read_json(self._dir / "config.json")
        found = raw.get("model_type")
        if found != c.model_type:
            hint = f"; use the '{found}' encoder type" if found in ("wav2vec2", "hubert") else ""
            raise InputError(f"{self._dir} holds a {found!r} model, not a {c.model_type!r} model{hint}")
        weights = self._weight_files()
        config_cls = getattr(self._transformers, self.CONFIG_CLASS)
        try:
            hf = config_cls.from_pretrained(str(self._dir), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"cannot read the model config in {self._dir}: {first_line(e)}") from e
        n_layers = int(hf.num_hidden_layers)
        if not -(n_layers + 1) <= c.layer <= n_layers:
            raise InputError(
                f"layer {c.layer} is out of range for {self._dir}: hidden states 0..{n_layers} (or -{n_layers + 1}..-1)"
            )
        self._layer = c.layer % (n_layers + 1)
        self._hidden = int(hf.hidden_size)
        # Receptive field R and hop S (samples) of the CNN front end.
        self._hop = math.prod(int(s) for s in hf.conv_stride)
        field, jump = 1, 1
        for k, s in zip(hf.conv_kernel, hf.conv_stride, strict=True):
            field += (int(k) - 1) * jump
            jump *= int(s)
        self._field = field
        pre = read_json(self._dir / "preprocessor_config.json") if (self._dir / "preprocessor_config.json").is_file() else {}
        self._sr = int(pre.get("sampling_rate", 16000))
        # Wav2Vec2FeatureExtractor's default: zero-mean unit-variance input; a saved preprocessor says otherwise.
        self._normalize = bool(pre.get("do_normalize", True))
        self._window = max(round(c.chunk_s * self._sr / self._hop), 1)
        self._context = round(c.context_s * self._sr / self._hop)
        self._fingerprint = dir_fingerprint(self._dir, ["config.json", "preprocessor_config.json", *weights])

    def _weight_files(self) -> list[str]:
        names = [p.name for p in self._dir.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES]
        names += [n for n in _WEIGHT_INDEXES if (self._dir / n).is_file()]
        if not names:
            raise InputError(f"{self._dir} is not {_FORMAT}: no model.safetensors or pytorch_model.bin")
        return names

    @property
    def config(self) -> _HFSpeechConfig:
        return self._cfg

    @property
    def fps(self) -> float:
        return self._cfg.fps

    @property
    def feature_dim(self) -> int:
        return self._hidden

    @property
    def layer(self) -> int:
        """The hidden state output, as a non-negative index (0 = CNN features)."""
        return self._layer

    @property
    def cache_key(self) -> str:
        c = self._cfg
        # The model's content stands in for its path; -1 and L name the same layer; the device is left out.
        d = {"model": self._fingerprint, "layer": self._layer, "fps": c.fps, "chunk_s": c.chunk_s,
             "context_s": c.context_s}
        return f"{type(self).__name__}-v{self.VERSION}-{config_digest(d)}"

    def encode(self, wav: np.ndarray, sr: int, n_frames: int | None = None) -> np.ndarray:
        """`(S,)` mono audio at `sr` Hz -> `(n_frames, feature_dim) float32`, row `i` at `(i + 0.5) / fps` s."""
        import torch

        from erlnet.io.audio import resample  # lazily: keeps config imports light

        c = self._cfg
        wav, n_frames = check_audio(wav, sr, c.fps, n_frames)
        wav = resample(wav, int(sr), self._sr)
        first_s, step_s = self._field / 2.0 / self._sr, self._hop / self._sr
        n_states = states_needed(n_frames, c.fps, first_s, step_s)
        total = n_states + self._context  # right context of the last state: real audio or silence
        n_samples = (total - 1) * self._hop + self._field
        n_real = min(wav.size, n_samples)
        wav = fit_length(wav, n_samples)  # our own copy (resample copies), so normalising in place is safe
        if self._normalize:
            seg = wav[:n_real].astype(np.float64)
            wav[:n_real] = (seg - seg.mean()) / np.sqrt(seg.var() + 1e-7)  # as Wav2Vec2FeatureExtractor
        model, device = self._model()
        states = np.empty((n_states, self._hidden), np.float32)
        with torch.inference_mode():
            for start, stop, keep0, keep1 in plan_windows(n_states, self._window, self._context):
                stop = min(stop, total)
                x = torch.from_numpy(wav[start * self._hop : (stop - 1) * self._hop + self._field]).to(device)
                out = model(x[None], output_hidden_states=True).hidden_states[self._layer][0]
                if out.shape[0] != stop - start:  # a model whose front end differs from its config
                    raise RuntimeError(f"expected {stop - start} states from {self._dir}, got {out.shape[0]}")
                states[keep0:keep1] = out[keep0 - start : keep1 - start].float().cpu().numpy()
        return states_to_frames(states, first_s, step_s, c.fps, n_frames)

    def _model(self) -> tuple[Any, Any]:
        """The loaded model in eval mode (shared between instances) and its torch device."""
        import torch

        dev = self._cfg.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        elif dev.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {dev!r} was asked for the {self._cfg.kind} audio encoder, but CUDA is not available")
        device = torch.device(dev)

        def load() -> Any:
            cls = getattr(self._transformers, self.MODEL_CLASS)
            try:
                model = cls.from_pretrained(str(self._dir), local_files_only=True)
            except Exception as e:  # corrupt weights raise library-specific errors (SafetensorError, UnpicklingError)
                raise InputError(f"cannot load the {self._cfg.kind} model in {self._dir}: {first_line(e)}") from e
            return model.to(device=device, dtype=torch.float32).eval()

        key = (self.MODEL_CLASS, str(self._dir.resolve()), self._fingerprint, str(device))
        return _MODELS.get(key, load), device


class Wav2Vec2Encoder(_HFSpeechEncoder):
    """wav2vec 2.0 (`transformers.Wav2Vec2Model`) hidden states; see the module docstring."""

    MODEL_CLASS = "Wav2Vec2Model"
    CONFIG_CLASS = "Wav2Vec2Config"


class HubertEncoder(_HFSpeechEncoder):
    """HuBERT (`transformers.HubertModel`) hidden states; see the module docstring."""

    MODEL_CLASS = "HubertModel"
    CONFIG_CLASS = "HubertConfig"

