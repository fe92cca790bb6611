"""The store's index (pure, no I/O): which object sits in which tier and slot, LRU eviction,
pins, and hit/miss accounting per tier.

Tiers are exclusive: an object is in DRAM or in the file tier, never both. A lookup of an
object in the file tier stages it into DRAM (the only tier the network reads from); room in
DRAM is made by demoting the least recently used unpinned DRAM object to the file tier, and
room in the file tier by dropping its least recently used object. Every change of place is
returned as a Move, in the order the I/O layer must carry it out (a slot is written before the
object it held is needed elsewhere).

Batches (begin_batch/end_batch around one lookup of many objects) let the I/O layer run all of
the batch's demotions, then all of its stagings, each group in parallel: a staged object's file
slot is held until end_batch, so no demotion writes where a staging has yet to read, and the
objects a batch stages are pinned as they are found, so no demotion reads a DRAM slot a staging
of the same batch filled. `parallel_safe` checks the one case left: two demotions given one slot.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable

DRAM, FILE = "dram", "file"


@dataclass(frozen=True)
class Move:
    """Copy an object between tiers: demote (DRAM slot -> file slot) or stage (file -> DRAM)."""

    kind: str  # "demote" | "stage"
    key: Hashable
    dram_slot: int
    file_slot: int


@dataclass
class Counters:
    hits: dict[str, int] = field(default_factory=lambda: {DRAM: 0, FILE: 0})
    misses: int = 0
    demoted: int = 0  # DRAM -> file
    staged: int = 0  # file -> DRAM
    dropped: int = 0  # evicted from the last tier
    stored: int = 0  # put() calls

    def to_dict(self) -> dict[str, int]:
        return {"hits_dram": self.hits[DRAM], "hits_file": self.hits[FILE], "misses": self.misses,
                "demoted": self.demoted, "staged": self.staged, "dropped": self.dropped, "stored": self.stored}


class StoreFull(Exception):
    """Every DRAM slot is pinned: nothing can be staged or stored now."""


class TierIndex:
    def __init__(self, dram_slots: int, file_slots: int = 0) -> None:
        if dram_slots < 1 or file_slots < 0:
            raise ValueError(f"need >= 1 DRAM slot and >= 0 file slots, got {dram_slots}, {file_slots}")
        self.dram_slots, self.file_slots = int(dram_slots), int(file_slots)
        self.dram: OrderedDict[Hashable, int] = OrderedDict()  # key -> slot, least recent first
        self.file: OrderedDict[Hashable, int] = OrderedDict()
        self.free_dram = list(range(self.dram_slots - 1, -1, -1))  # pop() gives slot 0 first
        self.free_file = list(range(self.file_slots - 1, -1, -1))
        self.pins: dict[Hashable, int] = {}
        self.counters = Counters()
        # File slots of objects staged in the current batch: freed by end_batch(), after the I/O, so
        # no demotion of the same batch is given a slot a staging has yet to read (see Move order).
        self.batching = False
        self.held_file: list[int] = []

    def begin_batch(self) -> None:
        self.batching = True

    def end_batch(self) -> None:
        self.batching = False
        self.free_file.extend(self.held_file)
        self.held_file.clear()

    def __len__(self) -> int:
        return len(self.dram) + len(self.file)

    def where(self, key: Hashable) -> tuple[str, int] | None:
        if key in self.dram:
            return DRAM, self.dram[key]
        if key in self.file:
            return FILE, self.file[key]
        return None

    def _file_slot(self, keep: Hashable | None, moves: list[Move]) -> int | None:
        """A free file slot, dropping the file tier's LRU object (never `keep`) if needed."""
        if self.free_file:
            return self.free_file.pop()
        for victim in self.file:
            if victim != keep and not self.pins.get(victim):
                slot = self.file.pop(victim)
                self.counters.dropped += 1
                return slot
        return None

    def _dram_slot(self, keep: Hashable | None, moves: list[Move]) -> int:
        """A free DRAM slot, demoting the LRU unpinned DRAM object (or dropping it without a file tier)."""
        if self.free_dram:
            return self.free_dram.pop()
        victim = next((k for k in self.dram if not self.pins.get(k)), None)
        if victim is None:
            raise StoreFull(f"all {self.dram_slots} DRAM slots are pinned")
        slot = self.dram.pop(victim)
        fslot = self._file_slot(keep, moves) if self.file_slots else None
        if fslot is None:
            self.counters.dropped += 1
        else:
            moves.append(Move("demote", victim, slot, fslot))
            self.file[victim] = fslot
            self.counters.demoted += 1
        return slot

    def put(self, key: Hashable) -> tuple[int, list[Move]]:
        """Room for `key` in DRAM (most recent); the caller writes its bytes at the slot after the moves."""
        moves: list[Move] = []
        self._forget(key)
        slot = self._dram_slot(key, moves)
        self.dram[key] = slot
        self.counters.stored += 1
        return slot, moves

    def _forget(self, key: Hashable) -> None:
        if key in self.dram:
            self.free_dram.append(self.dram.pop(key))
        elif key in self.file:
            self.free_file.append(self.file.pop(key))

    def get(self, key: Hashable, pin: bool = True) -> tuple[str, int, list[Move]] | None:
        """Where `key` can be read in DRAM after the moves, and which tier it was found in; None: a miss.
        A hit becomes the most recently used object; `pin` keeps it in place until unpin()."""
        moves: list[Move] = []
        if key in self.dram:
            self.dram.move_to_end(key)
            tier, slot = DRAM, self.dram[key]
        elif key in self.file:
            fslot = self.file[key]
            slot = self._dram_slot(key, moves)  # may demote another object into a fresh file slot
            del self.file[key]
            (self.held_file if self.batching else self.free_file).append(fslot)
            moves.append(Move("stage", key, slot, fslot))
            self.dram[key] = slot
            self.counters.staged += 1
            tier = FILE
        else:
            self.counters.misses += 1
            return None
        self.counters.hits[tier] += 1
        if pin:
            self.pins[key] = self.pins.get(key, 0) + 1
        return tier, slot, moves

    def unpin(self, key: Hashable) -> None:
        n = self.pins.get(key, 0) - 1
        if n > 0:
            self.pins[key] = n
        else:
            self.pins.pop(key, None)

    def check(self) -> str | None:
        """Why the index is inconsistent (a slot used twice, a lost slot), or None: for tests."""
        for name, used, free, total in ((DRAM, self.dram, self.free_dram, self.dram_slots),
                                        (FILE, self.file, self.free_file, self.file_slots)):
            slots = list(used.values()) + free + (self.held_file if name == FILE else [])
            if sorted(slots) != list(range(total)):
                return f"{name} slots inconsistent: used {sorted(used.values())}, free {sorted(free)} of {total}"
        if set(self.dram) & set(self.file):
            return "an object is in both tiers"
        return None


def parallel_safe(moves: list[Move]) -> bool:
    """Whether a batch's moves may run as two parallel groups (all demotions, then all stagings):
    no file slot written twice, no DRAM slot staged into twice, no DRAM slot demoted twice."""
    dem = [m for m in moves if m.kind == "demote"]
    stg = [m for m in moves if m.kind == "stage"]
    return (len({m.file_slot for m in dem}) == len(dem) and len({m.dram_slot for m in dem}) == len(dem)
            and len({m.dram_slot for m in stg}) == len(stg))

