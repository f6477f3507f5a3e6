"""Arena planning: alignment, no overlap of simultaneously live buffers, reuse, determinism."""

from __future__ import annotations

import random

import pytest

from compiler.artifact.memory_plan import ARENA_ALIGNMENT, ArenaPlan, BufferLifetime, plan_arena


def assert_valid(buffers: list[BufferLifetime], plan: ArenaPlan) -> None:
    assert set(plan.offsets) == {b.key for b in buffers}
    for b in buffers:
        assert plan.offsets[b.key] % ARENA_ALIGNMENT == 0
        assert plan.offsets[b.key] + b.size <= plan.size
    for i, x in enumerate(buffers):
        for y in buffers[i + 1:]:
            if x.size and y.size and x.overlaps_in_time(y):
                ox, oy = plan.offsets[x.key], plan.offsets[y.key]
                assert ox + x.size <= oy or oy + y.size <= ox, (x, y, ox, oy)


def test_random_lifetimes_never_collide() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        buffers = []
        for i in range(rng.randint(1, 40)):
            first = rng.randint(0, 30)
            buffers.append(BufferLifetime(f"t{i}", rng.choice([0, 1, 63, 64, 100, 4096, rng.randint(1, 10**6)]),
                                          first, first + rng.randint(0, 10)))
        plan = plan_arena(buffers)
        assert_valid(buffers, plan)
        assert plan.size <= sum(-(-b.size // ARENA_ALIGNMENT) * ARENA_ALIGNMENT for b in buffers)


def test_sequential_buffers_reuse_memory() -> None:
    # A chain: each buffer is read by the next step only, so at most two are live at once.
    buffers = [BufferLifetime(f"t{i}", 1000, i, i + 1) for i in range(10)]
    plan = plan_arena(buffers)
    assert_valid(buffers, plan)
    assert plan.size == 2 * 1024
    assert len(set(plan.offsets.values())) == 2


def test_best_fit_fills_a_gap() -> None:
    buffers = [
        BufferLifetime("big_early", 4096, 0, 1),
        BufferLifetime("long", 1024, 0, 5),
        BufferLifetime("small_late", 512, 3, 4),
    ]
    plan = plan_arena(buffers)
    assert_valid(buffers, plan)
    assert plan.offsets["small_late"] == 0  # reuses the space of big_early
    assert plan.size == 4096 + 1024


def test_deterministic_and_order_independent_for_distinct_sizes() -> None:
    rng = random.Random(7)
    buffers = [BufferLifetime(f"t{i}", 64 * (i + 1), rng.randint(0, 5), 6 + rng.randint(0, 5)) for i in range(20)]
    shuffled = buffers[:]
    rng.shuffle(shuffled)
    assert plan_arena(buffers) == plan_arena(buffers)
    assert plan_arena(buffers).offsets == plan_arena(shuffled).offsets


def test_empty_plan() -> None:
    assert plan_arena([]) == ArenaPlan(offsets={}, size=0)


@pytest.mark.parametrize(
    "buffers, message",
    [
        ([BufferLifetime("a", 1, 0, 0), BufferLifetime("a", 1, 1, 1)], "twice"),
        ([BufferLifetime("a", -1, 0, 0)], "negative"),
        ([BufferLifetime("a", 1, 3, 2)], "before it is written"),
    ],
)
def test_invalid_buffers(buffers: list[BufferLifetime], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_arena(buffers)


def test_symbolic_slots_never_collide_at_any_size() -> None:
    """Slots are placed per run: for random lifetimes and random values of the size variable, every
    two slots live at the same time are disjoint and start at or after the static part."""
    from compiler.artifact.memory_plan import plan_symbolic_slots
    from compiler.loopir.expr import Const, mul
    from compiler.loopir.sizes import SizeVar, evaluate_size

    n = SizeVar("n")
    rng = random.Random(99)
    for _ in range(100):
        buffers = [BufferLifetime(f"s{i}", mul(n, Const(rng.choice([1, 4, 100, 3072]))), first, first + rng.randint(0, 5))
                   for i, first in enumerate(rng.randint(0, 20) for _ in range(rng.randint(1, 25)))]
        slots = plan_symbolic_slots(buffers)
        base = 4096
        for value in (1, 7, 1000):
            offsets: dict[str, int] = {}
            ends: dict[str, int] = {}
            for slot in slots:
                offsets[slot.key] = max([base] + [ends[k] for k in slot.after])
                assert offsets[slot.key] % ARENA_ALIGNMENT == 0
                ends[slot.key] = offsets[slot.key] + evaluate_size(slot.size, {"n": value})
            sizes = {b.key: evaluate_size(b.size, {"n": value}) for b in buffers}
            for i, x in enumerate(buffers):
                assert ends[x.key] - offsets[x.key] >= sizes[x.key]
                for y in buffers[i + 1:]:
                    if x.overlaps_in_time(y):
                        ox, oy = offsets[x.key], offsets[y.key]
                        assert ox + sizes[x.key] <= oy or oy + sizes[y.key] <= ox, (x, y)
