#include "daemon/arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ALIGN 64

void arena_begin_count(arena_t* a) {
    memset(a, 0, sizeof *a);
    a->counting = 1;
}

// Transparent huge pages for the arena's interior (where the kernel leaves THP to
// madvise): a 2 MiB page costs one fault instead of 512, and the GEMMs' TLB reach grows.
// Untouched memory still costs nothing; a touched region rounds up to 2 MiB.
static void advise_huge_pages(void* block, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = 2u << 20;
    uintptr_t lo = ((uintptr_t)block + huge - 1) / huge * huge;
    uintptr_t hi = ((uintptr_t)block + n) / huge * huge;
    if (hi > lo) madvise((void*)lo, hi - lo, MADV_HUGEPAGE); // only a hint
#else
    (void)block, (void)n;
#endif
}

int arena_reserve(arena_t* a) {
    // calloc: large blocks come zeroed from mmap and are not touched here, so buffers sized
    // for the worst case (expert-side rows, the metrics history of a long run) cost memory
    // only as far as they are used. The base is aligned by hand.
    size_t cap = a->used + ALIGN;
    a->block = calloc(1, cap + ALIGN);
    if (!a->block) return -1;
    a->base = (char*)(((uintptr_t)a->block + ALIGN - 1) / ALIGN * ALIGN);
    a->cap = cap;
    advise_huge_pages(a->block, cap + ALIGN);
    a->used = 0;
    a->counting = 0;
    return 0;
}

void* arena_alloc(arena_t* a, size_t bytes) {
    if (a->frozen) {
        fprintf(stderr, "moed: internal error: allocation of %zu bytes after start-up\n", bytes);
        abort();
    }
    size_t at = (a->used + ALIGN - 1) / ALIGN * ALIGN;
    a->used = at + bytes;
    if (a->counting) return NULL;
    if (a->used > a->cap) {
        fprintf(stderr, "moed: internal error: arena overflow (%zu > %zu)\n", a->used, a->cap);
        abort();
    }
    return a->base + at;
}

void arena_freeze(arena_t* a) { a->frozen = 1; }

void arena_free(arena_t* a) {
    free(a->block);
    memset(a, 0, sizeof *a);
}
