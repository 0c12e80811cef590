"""What the verbs share: argument types, the JSON settings the rules pass, the device, the preprocessed folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segzoo.errors import SegzooError


def preprocessed(folder: Path):
    from segzoo.data.preprocessed import Preprocessed

    return Preprocessed(folder)


def claim_device(requested: str) -> str:
    """Resolve ``auto``; for CUDA take a GPU from the pool before torch initialises CUDA."""
    from segzoo.devices import acquire, resolve_device

    device = resolve_device(requested)
    if device == "cuda":
        lease = acquire()
        print(f"using GPU CUDA_VISIBLE_DEVICES={lease.devices}", file=sys.stderr)
    return device


def json_settings(text: str, *keys: str) -> dict:
    import json

    try:
        settings = json.loads(text)
        for key in keys:
            settings[key]
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise SegzooError(f"--settings: not a JSON object with {', '.join(map(repr, keys))} ({e})") from None
    return settings


def positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
