"""Model bundles: a directory with `config.json` (kind, schema version, config, metadata) and
`model.safetensors` (weights). Nothing is ever unpickled, so a bundle from anyone is safe to open.

    save_bundle(dir, kind="avatar", schema_version=1, config={...}, tensors=model.state_dict())
    config, tensors, meta = load_bundle(dir, kind="avatar", schema_version=1)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from erlnet.errors import FormatError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_bundle(
    root: str | Path,
    kind: str,
    schema_version: int,
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle into `root`, keeping any other files there (checkpoints, logs).

    Each file is written under a temporary name and renamed, weights first, so a reader never sees a
    half-written file, and a config only ever names weights that are complete.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    header = {"kind": kind, "schema_version": schema_version, "config": config, "meta": meta or {}}
    tmp_w, tmp_c = root / f".{WEIGHTS}.partial", root / f".{CONFIG}.partial"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp_w))
    tmp_c.write_text(json.dumps(header, indent=2, sort_keys=True, default=str))
    os.replace(tmp_w, root / WEIGHTS)
    os.replace(tmp_c, root / CONFIG)
    return root


def load_bundle(
    root: str | Path, kind: str, schema_version: int, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Read a bundle; returns (config, tensors, meta). A missing, corrupt or foreign bundle gives a
    one-line `FormatError`."""
    root = Path(root)
    cpath, wpath = root / CONFIG, root / WEIGHTS
    if not root.is_dir():
        raise FormatError(f"{root}: no such {kind} directory")
    if not cpath.exists() or not wpath.exists():
        raise FormatError(f"{root}: not an erlnet {kind} (needs {CONFIG} and {WEIGHTS})")
    try:
        header = json.loads(cpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{cpath}: corrupt ({exc})") from None
    if not isinstance(header, dict) or header.get("kind") != kind:
        got = header.get("kind") if isinstance(header, dict) else None
        raise FormatError(f"{root}: is a {got or 'unknown'} bundle, expected an erlnet {kind}")
    if header.get("schema_version") != schema_version:
        raise FormatError(
            f"{root}: {kind} schema version {header.get('schema_version')} is not supported "
            f"(this erlnet reads version {schema_version})"
        )
    try:
        tensors = load_file(str(wpath), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{wpath}: corrupt weights ({exc})") from None
    return header.get("config", {}), tensors, header.get("meta", {})
