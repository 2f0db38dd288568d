#!/usr/bin/env python3
"""Napkin model of the flash kernels' block orders (kernels/flash/tile_order.h), no GPU needed.

Each block's work is its number of inner tiles (forward: key tiles its query tile sees;
backward: query tiles x query heads that see its key tile). The GPU is modelled as SMs x
blocks-per-SM slots fed in block-index order, each new block taking the first free slot (list
scheduling). It prints the makespan over the ideal max(total / slots, largest block) for the
plain order (one group per section) and the sectioned order the launcher plans. It ignores
that blocks sharing an SM share its throughput, L2 hits and prologue/epilogue costs, so it
ranks orders; it does not predict times. The GPU benchmark decides:

    SLUICE_FLASH_TILE_ORDER=plain     build/benchmarks/bench_attention
    SLUICE_FLASH_TILE_ORDER=sectioned build/benchmarks/bench_attention

    python3 scripts/tile_order_model.py [--sms 132]
"""
import argparse
import heapq
import math

L2_BUDGET = 16 << 20  # launch.cuh kTileOrderL2Budget


def plan(tiles, groups, group_bytes, resident):
    """tile_order.h plan_tile_order."""
    target = max(math.ceil(resident / tiles), L2_BUDGET // group_bytes if group_bytes > 0 else groups)
    return next((d for d in range(1, groups + 1) if groups % d == 0 and d >= target), groups)


def slot(tiles, groups, per, block):
    """tile_order.h tile_slot: (tile rank, group)."""
    section_blocks = per * tiles
    section = block // section_blocks
    first = section * per
    inside = block - section * section_blocks
    n = min(per, groups - first)
    return inside // n, first + inside % n


def makespan(work, resident):
    free = [0.0] * resident
    heapq.heapify(free)
    end = 0.0
    for w in work:
        t = heapq.heappop(free) + w
        end = max(end, t)
        heapq.heappush(free, t)
    return end


def shape_blocks(kind, B, H, KV, T, D):
    """(tiles, groups, work of tile rank r, bytes per group) of a causal T == S launch (traits.h tiles)."""
    if kind == "fwd":
        bm, bn = (128 if D == 128 else 64), 64
        tiles = math.ceil(T / bm)
        work = lambda r: math.ceil(min(T, (tiles - r) * bm) / bn)  # rank 0: the last query tile
        return tiles, B * H, work, 2 * D * (T + 2 * T * KV // H)
    bm, bn = 64, 128
    tiles = math.ceil(T / bn)
    work = lambda r: (math.ceil(T / bm) - (r * bn) // bm) * (H // KV)  # rank 0: key tile 0
    return tiles, B * KV, work, 4 * D * T * (H // KV)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sms", type=int, default=132, help="SMs (H100 SXM: 132)")
    args = ap.parse_args()
    # issue-8 shapes (B, H, KV, T, D). Blocks per SM: forward hd128 2 (traits.h: 68 KB of shared memory and
    # 128 threads x up to 255 registers), hd64 4 (assumed; the launcher asks cudaOccupancyMaxActiveBlocksPerMultiprocessor);
    # backward 1 (255 registers x 256 threads fill the register file).
    shapes = [(8, 16, 16, 2048, 128), (16, 12, 4, 2048, 64), (2, 16, 4, 8192, 128)]
    per_sm = {("fwd", 128): 2, ("fwd", 64): 4, ("bwd", 128): 1, ("bwd", 64): 1}
    print(f"{'kernel':5} {'shape':22} {'blocks':>7} {'slots':>6} {'plain':>7} {'sectioned':>10} {'groups/section':>15}")
    for B, H, KV, T, D in shapes:
        for kind in ("fwd", "bwd"):
            tiles, groups, work, group_bytes = shape_blocks(kind, B, H, KV, T, D)
            resident = args.sms * per_sm[(kind, D)]
            total = sum(work(r) for r in range(tiles)) * groups
            ideal = max(total / resident, work(0))
            res = {}
            for name, per in (("plain", 1), ("sectioned", plan(tiles, groups, group_bytes, resident))):
                order = [work(slot(tiles, groups, per, b)[0]) for b in range(tiles * groups)]
                res[name] = (makespan(order, resident) / ideal, per)
            shape = f"{B}x{H}/{KV}x{T}x{D}"
            print(f"{kind:5} {shape:22} {tiles * groups:7d} {resident:6d} {res['plain'][0]:7.3f} "
                  f"{res['sectioned'][0]:10.3f} {res['sectioned'][1]:15d}")


if __name__ == "__main__":
    main()
