"""The embedded index's vectors in memory: one float32 matrix per index version, kept equal to
the Tantivy documents (where the vectors are stored, so they are committed, rebuilt, swapped
and followed by reader processes exactly like the index itself).

After each reader reload (a commit here or, in a reader process, the writer's) the store reads
the `item_id` and `vec_hash` fast fields of every document, and loads the stored vectors of the
items whose hash changed only; rows of deleted or changed items are freed and reused. Scoring
is exact: one matrix-vector product over every row, the item's score is the best of its rows.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import tantivy
from tantivy import Query

_INITIAL_ROWS = 1024


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
    def __init__(self) -> None:
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

    @property
    def vector_count(self) -> int:
        return self.used_rows - len(self.free_rows)

    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.row_slot.nbytes + self.slot_item.nbytes + self.slot_model.nbytes)

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

    def _grow(self) -> None:
        size = len(self.rows) * 2
        rows = np.zeros((size, self.dims), dtype=np.float32)
        rows[: len(self.rows)] = self.rows
        row_slot = np.full(size, -1, dtype=np.int64)
        row_slot[: len(self.row_slot)] = self.row_slot
        self.rows, self.row_slot = rows, row_slot

    # ------------------------------------------------------------------ scoring

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
