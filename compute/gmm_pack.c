// Pre-packed expert weights (gmm.h): the copies, their full packing, and the optimizer pass
// that updates the weights and repacks them block by block.
//
// Why fused: the weights change at every step, and a separate repack pass would read every
// weight from memory once more and write the copies; measured, that costs more than packing on
// the fly saves (docs/performance.md). AdamW already streams every weight through the core,
// so the repack rides on it: a block of a few rows is updated, then written into the copies
// while it is in L1/L2, and the only added traffic is the copies' own stores.
//
// Blocks: rows [r0, r1) of one expert's W0 and W1 (rows of d) or of its Wo (rows of f). A row
// of W is a row of B in the forward copies (x·W, a·Wo) and a column of B in the backward ones
// (dh·Wᵀ, dy·Woᵀ), so a block packs a range of rows of the first and a range of panels of
// the second (pack_b_part): blocks are whole panels (multiples of the table's NR) for that.
#include <string.h>

#include "compute/gmm.h"
#include "compute/kernels/kernels.h"

// Floats per copy rounded up to 64 bytes, so every expert's copy starts aligned.
static long align16(size_t n) { return (long)((n + 15) / 16 * 16); }

size_t gmm_packed_floats(int G, int d, int f, int backward) {
    gmm_packed_t pk;
    gmm_packed_bind(&pk, G, d, f, backward, NULL); // the sizes alone
    return (size_t)G * (pk.up_n + pk.down_n + pk.da_n + 2 * pk.dx_n);
}

void gmm_packed_bind(gmm_packed_t* pk, int G, int d, int f, int backward, float* mem) {
    memset(pk, 0, sizeof *pk);
    pk->G = G, pk->d = d, pk->f = f;
    pk->up_n = align16(kern->packed_floats(d, f, 2));
    pk->down_n = align16(kern->packed_floats(f, d, 1));
    pk->da_n = backward ? align16(kern->packed_floats(d, f, 1)) : 0;
    pk->dx_n = backward ? align16(kern->packed_floats(f, d, 1)) : 0;
    if (!mem) return;
    pk->up = mem, mem += G * pk->up_n;
    pk->down = mem, mem += G * pk->down_n;
    if (!backward) return;
    pk->da = mem, mem += G * pk->da_n;
    pk->dx0 = mem, mem += G * pk->dx_n;
    pk->dx1 = mem;
}

// Rows per block: whole panels (two), and at f = 1024 a W0+W1 block of 2 x 32 rows x 4 KiB
// stays in a 512 KiB L2 beside the gradient and moments streaming past.
static int block_rows(void) { return 2 * kern->nr > 32 ? 2 * kern->nr : 32; }

// Blocks of one expert: ceil(d / R) of W0|W1, then ceil(f / R) of Wo.
static long blocks_per_expert(const gmm_packed_t* pk, int R) {
    return (pk->d + R - 1) / R + (pk->f + R - 1) / R;
}

// Expert e's block b: the matrix (0: W0|W1, 1: Wo) and its rows [r0, r1).
static int block_of(const gmm_packed_t* pk, int R, long b, int* r0, int* r1) {
    int nb0 = (pk->d + R - 1) / R;
    int wo = b >= nb0, rows = wo ? pk->f : pk->d;
    *r0 = (int)(wo ? b - nb0 : b) * R;
    *r1 = *r0 + R < rows ? *r0 + R : rows;
    return wo;
}

// Block (e, r0, r1) of W0|W1 (wo = 0, w0/w1 expert e's matrices [d, f]) or of Wo (wo = 1,
// w0 expert e's Wo [f, d]) into every copy.
static void pack_block(const gmm_packed_t* pk, int e, int wo, int r0, int r1, const float* w0,
                       const float* w1) {
    int d = pk->d, f = pk->f;
    if (!wo) {
        kern->pack_b_part(d, f, w0, w1, f, 1, pk->up + e * pk->up_n, r0, r1, 0, f);
        if (pk->dx0) {
            kern->pack_b_part(f, d, w0, NULL, 1, f, pk->dx0 + e * pk->dx_n, 0, f, r0, r1);
            kern->pack_b_part(f, d, w1, NULL, 1, f, pk->dx1 + e * pk->dx_n, 0, f, r0, r1);
        }
    } else {
        kern->pack_b_part(f, d, w0, NULL, d, 1, pk->down + e * pk->down_n, r0, r1, 0, d);
        if (pk->da) kern->pack_b_part(d, f, w0, NULL, 1, d, pk->da + e * pk->da_n, 0, d, r0, r1);
    }
}

void gmm_pack(const gmm_packed_t* pk, const float* w0, const float* w1, const float* wo) {
    int R = block_rows();
    long nb = blocks_per_expert(pk, R), df = (long)pk->d * pk->f;
    // Each block writes its own elements of the copies: any thread split, the same bits.
#pragma omp parallel for schedule(static)
    for (long t = 0; t < pk->G * nb; t++) {
        int e = (int)(t / nb), r0, r1;
        int is_wo = block_of(pk, R, t % nb, &r0, &r1);
        if (is_wo)
            pack_block(pk, e, 1, r0, r1, wo + e * df, NULL);
        else
            pack_block(pk, e, 0, r0, r1, w0 + e * df, w1 + e * df);
    }
}

// Clip, then AdamW, on rows [r0, r1) of a matrix with `cols` columns at offset `off`.
static void update_rows(const adamw_coef_t* c, float clip, long off, int cols, int r0, int r1,
                        float* w, float* g, float* m, float* v) {
    long i0 = off + (long)r0 * cols, n = (long)(r1 - r0) * cols;
    if (clip != 1.0f)
        for (long i = 0; i < n; i++) g[i0 + i] *= clip;
    adamw_apply(c, n, w + i0, g + i0, m + i0, v + i0);
}

void gmm_adamw_pack(const gmm_packed_t* pk, const adamw_opts_t* o, long t, int decay, float clip,
                    float* w, float* g, float* m, float* v, long o0, long o1, long oo) {
    adamw_coef_t c = adamw_coef(o, t, decay);
    int R = block_rows(), d = pk->d, f = pk->f;
    long nb = blocks_per_expert(pk, R), df = (long)d * f;
#pragma omp parallel for schedule(static)
    for (long u = 0; u < pk->G * nb; u++) {
        int e = (int)(u / nb), r0, r1;
        long ed = e * df;
        if (block_of(pk, R, u % nb, &r0, &r1)) {
            update_rows(&c, clip, oo + ed, d, r0, r1, w, g, m, v);
            pack_block(pk, e, 1, r0, r1, w + oo + ed, NULL);
        } else {
            update_rows(&c, clip, o0 + ed, f, r0, r1, w, g, m, v);
            update_rows(&c, clip, o1 + ed, f, r0, r1, w, g, m, v);
            pack_block(pk, e, 0, r0, r1, w + o0 + ed, w + o1 + ed);
        }
    }
}
