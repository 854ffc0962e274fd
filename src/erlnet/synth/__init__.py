"""erlnet.synth: synthetic talking subjects with exact ground truth (no user video, no downloads).

>>> from erlnet.synth import SynthConfig, generate
>>> result = generate(SynthConfig(seconds=4, style="expressive", seed=1), "out/synth")
"""

from erlnet.synth.face import MOUTH_GAP_PER_UNIT, Expression
from erlnet.synth.generate import TRUTH_KEYS, SynthConfig, Synthesizer, SynthResult, generate, make_script
from erlnet.synth.speech import MouthDrive, Speech, builtin_speech, make_speech, mouth_drive
from erlnet.synth.styles import STYLES, Style, get_style

__all__ = [
    "MOUTH_GAP_PER_UNIT",
    "STYLES",
    "TRUTH_KEYS",
    "Expression",
    "MouthDrive",
    "Speech",
    "Style",
    "SynthConfig",
    "SynthResult",
    "Synthesizer",
    "builtin_speech",
    "generate",
    "get_style",
    "make_script",
    "make_speech",
    "mouth_drive",
]
