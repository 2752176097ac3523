"""The embedded index's vectors in memory: one float32 matrix per index version, kept equal to
the Tantivy documents (where the vectors are stored, so they are committed, rebuilt, swapped
and followed by reader processes exactly like the index itself).

After each reader reload (a commit here or, in a reader process, the writer's) the store reads
the `item_id` and `vec_hash` fast fields of every document, and loads the stored vectors of the
items whose hash changed only; rows of deleted or changed items are freed and reused. An item's
score is the best cosine of its rows.

Up to `ann_min_rows` vectors the ranking is exact: one matrix-vector product over every row (a few
ms). Beyond that a product over every row costs ~40 ms at 400,000 rows of 512 dims on one core,
too slow for 200 searches/s on two, so the rows are also kept in a faiss inverted-file index
(IVF, 8-bit scalar-quantized, k-means cells trained on the store's own rows): a query scans the
cells nearest to it (1/16 of them), and the candidates' cosines are then recomputed exactly from
the float32 rows. Measured on faq_dev's real questions (bench/vectors.py): R@10 0.983 against
0.987 exact. The IVF index follows the rows at every refresh (removed, added), and is retrained
when the store has grown four times past the rows it was trained on.
"""

from __future__ import annotations

import hashlib
import math
import threading
from typing import TYPE_CHECKING

import numpy as np
import tantivy
from tantivy import Query

if TYPE_CHECKING:
    import faiss

_INITIAL_ROWS = 1024
ANN_MIN_ROWS = 50_000
ANN_PROBE_SHARE = 16  # a query scans 1/16 of the cells
ANN_ROWS_PER_ITEM = 4  # rows fetched per wanted item (an item has several rows)


def vector_hash(model: str, blob: bytes) -> int:
    """A non-zero 63-bit hash of a model and its vectors (0 means: no vectors)."""
    digest = hashlib.blake2b(model.encode() + b"\0" + blob, digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 1) or 1


def unpack(blob: bytes) -> tuple[str, np.ndarray]:
    """The stored `vec` field: b"model\\ndims\\n" then float16 rows."""
    model, dims, raw = blob.split(b"\n", 2)
    rows = np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(-1, int(dims))
    return model.decode(), rows


class VectorStore:
    def __init__(self, ann_min_rows: int | None = None) -> None:
        self.lock = threading.Lock()  # refresh and scoring run in worker threads
        self.generation = -1
        self.dims = 0
        self.rows = np.zeros((0, 0), dtype=np.float32)
        self.row_slot = np.zeros(0, dtype=np.int64)  # row -> item slot; -1 when free
        self.used_rows = 0
        self.free_rows: list[int] = []
        self.slot_item = np.zeros(_INITIAL_ROWS, dtype=np.int64)  # slot -> item id
        self.slot_model = np.full(_INITIAL_ROWS, -1, dtype=np.int32)  # slot -> model code, -1 when free
        self.used_slots = 0
        self.free_slots: list[int] = []
        self.items: dict[int, tuple[int, int, list[int]]] = {}  # item id -> (hash, slot, rows)
        self.models: dict[str, int] = {}
        self.ann_min_rows = ANN_MIN_ROWS if ann_min_rows is None else ann_min_rows
        self.ann: faiss.IndexIVFScalarQuantizer | None = None
        self.ann_trained_rows = 0
        self._ann_quantizer: faiss.IndexFlatIP | None = None
        self._ann_added: list[int] = []
        self._ann_removed: list[int] = []

    @property
    def vector_count(self) -> int:
        return self.used_rows - len(self.free_rows)

    def nbytes(self) -> int:
        ann = self.ann.ntotal * (self.ann.code_size + 8) + self.ann.nlist * self.dims * 4 if self.ann else 0
        return int(self.rows.nbytes + self.row_slot.nbytes + self.slot_item.nbytes + self.slot_model.nbytes + ann)

    def count(self, model: str) -> int:
        """Items holding vectors of `model`."""
        code = self.models.get(model)
        return 0 if code is None else int((self.slot_model[: self.used_slots] == code).sum())

    # ------------------------------------------------------------------ following the index

    def refresh(self, searcher: tantivy.Searcher, generation: int) -> None:
        """Catch up with `searcher` (read at `generation` or later). Callers hold `lock`."""
        if generation == self.generation:
            return
        current: dict[int, tuple[int, tantivy.DocAddress]] = {}
        if searcher.num_docs:
            found = searcher.search(Query.all_query(), searcher.num_docs, count=False)
            addresses = [address for _, address in found.hits]
            ids = searcher.fast_field_values("item_id", addresses)
            hashes = searcher.fast_field_values("vec_hash", addresses)
            for item_id, h, address in zip(ids, hashes, addresses, strict=True):
                if item_id is not None:
                    current[int(item_id)] = (int(h or 0), address)
        for item_id in [i for i in self.items if i not in current]:
            self._drop(item_id)
        for item_id, (h, address) in current.items():
            known = self.items.get(item_id)
            if known is not None and known[0] == h:
                continue
            if known is not None:
                self._drop(item_id)
            if not h:
                self.items[item_id] = (0, -1, [])
                continue
            model, rows = unpack(searcher.doc(address)["vec"][0])
            self._add(item_id, h, model, rows)
        self._follow_ann()
        self.generation = generation

    def _drop(self, item_id: int) -> None:
        _, slot, rows = self.items.pop(item_id)
        if slot >= 0:
            self.slot_model[slot] = -1
            self.free_slots.append(slot)
        for row in rows:
            self.row_slot[row] = -1
            self.rows[row] = 0.0
            self.free_rows.append(row)
        self._ann_removed += rows

    def _add(self, item_id: int, h: int, model: str, vectors: np.ndarray) -> None:
        if not self.dims:
            self.dims = vectors.shape[1]
            self.rows = np.zeros((_INITIAL_ROWS, self.dims), dtype=np.float32)
            self.row_slot = np.full(_INITIAL_ROWS, -1, dtype=np.int64)
        if vectors.shape[1] != self.dims or not len(vectors):
            self.items[item_id] = (h, -1, [])  # another model's size: never compared
            return
        code = self.models.setdefault(model, len(self.models))
        if self.free_slots:
            slot = self.free_slots.pop()
        else:
            if self.used_slots == len(self.slot_item):
                self.slot_item = np.concatenate([self.slot_item, np.zeros_like(self.slot_item)])
                self.slot_model = np.concatenate([self.slot_model, np.full_like(self.slot_model, -1)])
            slot = self.used_slots
            self.used_slots += 1
        self.slot_item[slot] = item_id
        self.slot_model[slot] = code
        rows: list[int] = []
        for vector in vectors:
            if self.free_rows:
                row = self.free_rows.pop()
            else:
                if self.used_rows == len(self.rows):
                    self._grow()
                row = self.used_rows
                self.used_rows += 1
            self.rows[row] = vector
            self.row_slot[row] = slot
            rows.append(row)
        self.items[item_id] = (h, slot, rows)
        self._ann_added += rows

    def _grow(self) -> None:
        size = len(self.rows) * 2
        rows = np.zeros((size, self.dims), dtype=np.float32)
        rows[: len(self.rows)] = self.rows
        row_slot = np.full(size, -1, dtype=np.int64)
        row_slot[: len(self.row_slot)] = self.row_slot
        self.rows, self.row_slot = rows, row_slot

    def _follow_ann(self) -> None:
        added, removed = self._ann_added, self._ann_removed
        self._ann_added, self._ann_removed = [], []
        live = self.vector_count
        if live < self.ann_min_rows:
            self.ann = self._ann_quantizer = None
            return
        if self.ann is None or live > 4 * self.ann_trained_rows:
            self._build_ann()
            return
        if removed:
            self.ann.remove_ids(np.unique(np.asarray(removed, dtype=np.int64)))
        if added:
            rows = np.unique(np.asarray(added, dtype=np.int64))
            rows = rows[self.row_slot[rows] >= 0]
            self.ann.add_with_ids(self.rows[rows], rows)

    def _build_ann(self) -> None:
        import faiss  # only a store this large loads it (and its OpenMP runtime)

        faiss.omp_set_num_threads(1)  # requests run side by side in threads; one core each
        live_rows = np.flatnonzero(self.row_slot[: self.used_rows] >= 0).astype(np.int64)
        cells = int(min(4096, max(64, 2 * math.sqrt(len(live_rows)))))
        quantizer = faiss.IndexFlatIP(self.dims)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dims, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        sample = np.random.default_rng(0).choice(live_rows, min(len(live_rows), 40 * cells), replace=False)
        index.train(self.rows[np.sort(sample)])
        index.add_with_ids(self.rows[live_rows], live_rows)
        index.nprobe = max(8, math.ceil(cells / ANN_PROBE_SHARE))
        self.ann, self._ann_quantizer, self.ann_trained_rows = index, quantizer, len(live_rows)

    # ------------------------------------------------------------------ scoring

    def ranking(self, vector: np.ndarray, model: str) -> Ranking:
        """The items nearest to `vector` among those holding vectors of `model`. Callers hold `lock`."""
        return Ranking(self, np.asarray(vector, dtype=np.float32), model)

    def scores(self, vector: np.ndarray, model: str) -> np.ndarray:
        """slot -> cosine of the query with the item's best vector (-inf: free, other model)."""
        code = self.models.get(model)
        slots = self.used_slots
        if code is None or not self.used_rows or vector.shape != (self.dims,):
            return np.full(slots, -np.inf, dtype=np.float32)
        sims = self.rows[: self.used_rows] @ vector
        best = np.full(slots + 1, -np.inf, dtype=np.float32)  # the last one collects free rows (-1)
        np.maximum.at(best, self.row_slot[: self.used_rows], sims)
        best = best[:slots]
        best[self.slot_model[:slots] != code] = -np.inf
        return best


class Ranking:
    """One query's ranking over a store: `top(k)` best first, `of(ids)` for chosen items.

    Exact below the store's ANN threshold (every row scored once, at creation); above it each
    `top(k)` asks the IVF index for k x ANN_ROWS_PER_ITEM rows and recomputes their cosines
    exactly, so it may return fewer than k items (the scanned cells held no more): the caller then
    scores the items it is allowed to see with `of`. Methods other than the constructor take the
    store's lock themselves.
    """

    def __init__(self, store: VectorStore, vector: np.ndarray, model: str) -> None:
        self.store, self.vector, self.model = store, vector, model
        self.exact = store.ann is None
        if self.exact:
            self.best = store.scores(vector, model)
            self.slot_item = store.slot_item[: len(self.best)].copy()

    def top(self, k: int) -> tuple[list[int], list[float]]:
        if self.exact:
            best = self.best
            k = min(k, int(np.isfinite(best).sum()))
            if k <= 0:
                return [], []
            top = np.argpartition(-best, k - 1)[:k] if k < len(best) else np.arange(len(best))
            top = top[np.argsort(-best[top], kind="stable")]
            return [int(i) for i in self.slot_item[top]], [float(c) for c in best[top]]
        store = self.store
        with store.lock:
            code, ann = store.models.get(self.model), store.ann
            if code is None or ann is None or self.vector.shape != (store.dims,):
                return [], []
            _, found = ann.search(self.vector[None, :], k * ANN_ROWS_PER_ITEM)
            rows = found[0][found[0] >= 0]
            slots = store.row_slot[rows]
            keep = slots >= 0
            rows, slots = rows[keep], slots[keep]
            keep = store.slot_model[slots] == code
            rows, slots = rows[keep], slots[keep]
            cosines = store.rows[rows] @ self.vector
            order = np.argsort(-cosines, kind="stable")
            _, first = np.unique(slots[order], return_index=True)
            picked = order[np.sort(first)][:k]  # each item's best row, best first
            return [int(i) for i in store.slot_item[slots[picked]]], [float(c) for c in cosines[picked]]

    def of(self, item_ids: list[int]) -> dict[int, float]:
        """item id -> cosine, for those of `item_ids` holding vectors of the model."""
        store = self.store
        with store.lock:
            code = store.models.get(self.model)
            found: dict[int, float] = {}
            if code is None or self.vector.shape != (store.dims,):
                return found
            for item_id in item_ids:
                known = store.items.get(item_id)
                if known is None or known[1] < 0 or store.slot_model[known[1]] != code:
                    continue
                slot = known[1]
                if self.exact and slot < len(self.best) and self.slot_item[slot] == item_id:
                    found[item_id] = float(self.best[slot])
                else:
                    found[item_id] = float((store.rows[known[2]] @ self.vector).max())
            return found
