"""Local Hugging Face files, never downloaded: the model directory (save_pretrained's output, or a
folder holding a GGUF file) and the tokenizer inside it. A leaf: `models.hf` (the weights) and
`data.tokens` (text in the model's own tokens) both read through it, so they agree on what a model
directory is and on the message that names the fix."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from pruneexp.errors import PruneexpError

FETCH_HINT = "run `python scripts/fetch_smollm2.py` (or `make smollm2`) to bring SmolLM2-135M into $PRUNEEXP_CACHE"


def transformers_module() -> Any:
    """transformers, quiet (no progress bars), or a PruneexpError naming the extra to install."""
    try:
        import transformers
    except ImportError as err:
        raise PruneexpError("Hugging Face models and tokenizers need the transformers package: pip install -e '.[hf]'.") from err
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def model_directory(path: str, gguf_file: str = "", what: str = "model.path") -> Path:
    """The local directory of a model: config.json there (save_pretrained's output), or the GGUF
    file `gguf_file` there; a PruneexpError naming the fix otherwise."""
    root = Path(path).expanduser() if path else None
    if gguf_file:
        if root is None or not (root / gguf_file).is_file():
            raise PruneexpError(f"{what}={path!r} holds no GGUF file {gguf_file!r}; give the folder that holds it ({FETCH_HINT}).")
        try:
            import gguf  # noqa: F401  (transformers reads GGUF files through it)
        except ImportError as err:
            raise PruneexpError("reading a GGUF file needs the gguf package: pip install -e '.[hf]'.") from err
        return root
    if root is None or not (root / "config.json").is_file():
        raise PruneexpError(f"{what}={path!r} is not a local model directory (one with config.json): pruneexp never downloads "
                            f"a model; save it there first (save_pretrained), or {FETCH_HINT}.")
    return root


def load_tokenizer(path: str, gguf_file: str = "", what: str = "model.path") -> Any:
    """The tokenizer saved beside a model at `path` (or inside its GGUF file); read once per process
    while its files are unchanged (a reproduction's runs share it: reading SmolLM2's takes seconds)."""
    root = model_directory(path, gguf_file, what)
    files = sorted((root / gguf_file,) if gguf_file else (f for f in root.iterdir() if f.is_file() and "token" in f.name))
    return _read_tokenizer(str(root), gguf_file, what, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=4)
def _read_tokenizer(root: str, gguf_file: str, what: str, _stamp: tuple) -> Any:
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return transformers_module().AutoTokenizer.from_pretrained(root, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError) as err:
        raise PruneexpError(f"no tokenizer could be read from {what}={root!r}{' / ' + gguf_file if gguf_file else ''}: {err}") from None


def tokenizer_identity(tokenizer: Any) -> str:
    """sha256 of everything that decides a tokenizer's ids: the fast tokenizer's serialized
    pipeline (normalizer, pre-tokenizer, model, merges, added tokens) and whether BOS/EOS are added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    extra = repr((type(tokenizer).__name__, getattr(tokenizer, "add_bos_token", None), getattr(tokenizer, "add_eos_token", None)))
    return hashlib.sha256((body + extra).encode()).hexdigest()
