"""Named speaking styles of the synthetic subject: explicit numbers a test can check.

A style scales the audio-driven mouth motion, sets how much and how fast the head moves, how often
the subject blinks, and adds a constant expression offset (smile, brow raise, frown, wide eyes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from erlnet.errors import InputError


@dataclass(frozen=True)
class Style:
    """One speaking style. Expression offsets are unitless in [0, 1] (1 = strong); see face.py for mm."""

    mouth_amplitude: float = 1.0  # multiplies the audio-driven mouth opening (realised ratio is exact)
    width_amplitude: float = 1.0  # multiplies the audio-driven lip spread / rounding
    head_amplitude_deg: tuple[float, float, float] = (1.6, 2.6, 1.2)  # RMS of (pitch, yaw, roll), degrees
    head_speed: float = 1.0  # multiplies the frequencies of the head-motion sinusoids
    nod_with_speech_deg: float = 0.8  # extra pitch (down) per unit of smoothed speech loudness, degrees
    translation_m: tuple[float, float, float] = (0.003, 0.002, 0.004)  # RMS head translation x, y, z, m
    blink_interval_s: tuple[float, float] = (2.0, 6.0)  # uniform range of the time between blinks
    smile: float = 0.0  # lip corners up and out, cheeks up
    brow_raise: float = 0.0  # brows up (negative: down)
    frown: float = 0.0  # brows down and pulled together
    eye_open: float = 0.0  # upper lids up, lower lids down (wider eyes); negative narrows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STYLES: MappingProxyType[str, Style] = MappingProxyType(
    {
        "neutral": Style(),
        "expressive": Style(mouth_amplitude=1.5, width_amplitude=1.4, head_amplitude_deg=(2.2, 3.4, 1.6)),
        "subdued": Style(mouth_amplitude=0.6, width_amplitude=0.6, head_amplitude_deg=(1.0, 1.6, 0.7)),
        "nodding": Style(head_amplitude_deg=(4.5, 3.0, 1.5), head_speed=2.0, nod_with_speech_deg=2.5),
        "still": Style(
            head_amplitude_deg=(0.3, 0.4, 0.2), head_speed=0.7, nod_with_speech_deg=0.1,
            translation_m=(0.0005, 0.0004, 0.0006),
        ),
        "happy": Style(smile=1.0, eye_open=-0.2, head_amplitude_deg=(1.8, 2.8, 1.4)),
        "surprised": Style(brow_raise=1.0, eye_open=1.0, mouth_amplitude=1.15),
        "angry": Style(frown=1.0, brow_raise=-0.3, eye_open=-0.3, head_speed=1.3),
    }
)


def get_style(name: str) -> Style:
    """Style by name; InputError listing the known names otherwise."""
    try:
        return STYLES[name]
    except KeyError:
        raise InputError(f"unknown style {name!r}; choose one of: {', '.join(STYLES)}") from None
