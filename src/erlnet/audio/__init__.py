"""erlnet.audio: audio encoders mapping speech to per-video-frame features."""

from erlnet.audio.base import (
    AudioEncoder,
    AudioEncoderConfig,
    MelFormantConfig,
    config_from_dict,
    encoder_from_dict,
)

__all__ = ["AudioEncoder", "AudioEncoderConfig", "MelFormantConfig", "config_from_dict", "encoder_from_dict"]
