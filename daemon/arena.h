// All of a run's memory comes from one arena reserved at start-up. After arena_freeze the
// step loop cannot allocate: a late arena_alloc is a bug and aborts loudly.
#ifndef MOED_ARENA_H
#define MOED_ARENA_H

#include <stddef.h>

typedef struct {
    void* block; // what calloc returned
    char* base;  // block aligned to 64 bytes
    size_t cap, used;
    int frozen;
    int counting; // sizing pass: record sizes, hand out no memory
} arena_t;

// Two passes over the same set-up code: a counting pass (arena_begin_count) learns the
// size, arena_reserve allocates it once, a second pass hands out the memory.
void arena_begin_count(arena_t* a);
int arena_reserve(arena_t* a);               // 0 or -1 when out of memory
void* arena_alloc(arena_t* a, size_t bytes); // 64-byte aligned, zeroed; NULL while counting
void arena_freeze(arena_t* a);
void arena_free(arena_t* a);

#endif
