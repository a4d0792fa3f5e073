/*
 * Fused signGD neuron scan (CPU), loaded by signgd/kernels/c.py through ctypes.
 *
 * For every element i of a layer (N elements) and every step t < Tc:
 *     g     = x[t, i]                      (PRE_NONE: x holds the targets themselves)
 *           | x[t, i] * x[t, i]            (PRE_SQUARE: a square neuron's target)
 *           | x[t, i] * factor[t, i / rowlen]  (PRE_ROWMUL: one factor per row of rowlen
 *                                              elements; LayerNorm's c * rsqrt(v))
 *     g     = g / scale(i)                 (only when divide: the normalized target)
 *     s     = y >= g                       (a spike: "my estimate is too high")
 *     y     = s ? y - eta[t] : y + eta[t]   (one sign-gradient step)
 *     out[t, i] = y * scale(i)              (or y when there is no scale)
 *     counts[t] += s
 * These are the torch reference's operations in the torch reference's order (torch.square, the
 * broadcast multiply, the division by the scale, then the scan), each one IEEE operation, so the
 * results are bit-identical to it as long as this file is built without -ffast-math and without
 * FMA contraction (-ffp-contract=off: x * f / s must not become a fused multiply-add). Computing
 * the target inside the scan saves writing it to memory and reading it back.
 *
 * Layout: target and out are contiguous [Tc, N]; y0 / y_final are [N] (they may be the same
 * array: y is then updated in place). out may also be target itself (the scan then overwrites its
 * targets with its outputs, saving a buffer): element (t, i) of target is read before element
 * (t, i) of out is written and never read again, so the two pointers are not `restrict`; the
 * inner loop says `GCC ivdep` instead (no dependence between iterations), which keeps it
 * vectorized. Work is split over blocks of consecutive elements (OpenMP,
 * static schedule). A block keeps its y (and its scale) in a local array that stays in cache
 * while the loop runs over t outside and over the block's elements inside, so target is read
 * once and out written once, in contiguous runs that the compiler vectorizes.
 *
 * scale: NULL (no scale), scale_len == 1 (one scalar) or scale_len == M with N % M == 0
 * (element i uses scale[i % M]: a per-element scale broadcast over leading dimensions).
 * factor (PRE_ROWMUL only): contiguous [Tc, N / rowlen], N % rowlen == 0.
 * counts: NULL, or an int64 array of Tc entries that the spike counts are added to.
 */
#define _ISOC11_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <float.h>
#include <string.h>

/* Elements per block, in bytes of one row segment: long contiguous runs of each row stream well
 * from memory (measured: 8 KiB runs were ~25% slower than 128 KiB ones on a 205M-element
 * layer), but blocks must stay numerous enough to share among the threads. The block's own y
 * and scale (2 x 128 KiB at most) stay in the L2 cache. */
#ifndef SIGNGD_MIN_BLOCK_BYTES
#define SIGNGD_MIN_BLOCK_BYTES (8 << 10)
#endif
#ifndef SIGNGD_MAX_BLOCK_BYTES
#define SIGNGD_MAX_BLOCK_BYTES (128 << 10)
#endif

/* The least work (element-steps, N * Tc) worth another thread: waking a thread costs microseconds,
 * and a whole scheduler time slice (milliseconds) when another process has the cores busy. 2^17
 * element-steps take a thread 50-80 us; at 2^18 the LayerNorm scans of a 49-token Mixer (8
 * samples x 16 steps x 49 x 64 = 401,408) ran on one thread while torch split every op around
 * them over two. */
#ifndef SIGNGD_GRAIN
#define SIGNGD_GRAIN (1 << 17)
#endif

#define SCALE_NONE 0
#define SCALE_ONE 1
#define SCALE_ARRAY 2

#define PRE_NONE 0
#define PRE_SQUARE 1
#define PRE_ROWMUL 2

/* One block, all Tc steps. MODE, COUNT, PRE and DIV are compile-time constants after inlining.
 * The block is walked in segments that share one factor (PRE_ROWMUL: the rows of rowlen elements;
 * otherwise the whole block is one segment), so the innermost loop stays a plain vectorizable run. */
#define DEFINE_BLOCK(NAME, T, CNT_T)                                                          \
    static inline __attribute__((always_inline)) void NAME(                                  \
        const T *target, T *restrict y, const T *restrict etas,                               \
        const T *restrict sc, T *out, CNT_T *restrict cnt, int64_t Tc, int64_t N,             \
        int64_t n, const T *restrict factor, int64_t rowlen, int64_t i0,                      \
        const int MODE, const int COUNT, const int PRE, const int DIV)                        \
    {                                                                                         \
        const T s0 = (MODE == SCALE_ONE) ? sc[0] : (T)1;                                      \
        const int64_t nrows = (PRE == PRE_ROWMUL) ? N / rowlen : 0;                           \
        for (int64_t t = 0; t < Tc; ++t) {                                                    \
            const T eta = etas[t];                                                            \
            const T *tr = target + t * N;                                                     \
            T *orow = out + t * N;                                                            \
            const T *frow = (PRE == PRE_ROWMUL) ? factor + t * nrows : NULL;                  \
            CNT_T c = 0;                                                                      \
            int64_t j0 = 0;                                                                   \
            while (j0 < n) {                                                                  \
                int64_t j1 = n;                                                               \
                T f = (T)1;                                                                   \
                if (PRE == PRE_ROWMUL) {                                                      \
                    const int64_t row = (i0 + j0) / rowlen;                                   \
                    const int64_t end = (row + 1) * rowlen - i0;                              \
                    if (end < j1) j1 = end;                                                   \
                    f = frow[row];                                                            \
                }                                                                             \
                _Pragma("GCC ivdep")                                                          \
                for (int64_t j = j0; j < j1; ++j) {                                           \
                    T g;                                                                      \
                    if (PRE == PRE_SQUARE) { const T xv = tr[j]; g = xv * xv; }               \
                    else if (PRE == PRE_ROWMUL) g = tr[j] * f;                                \
                    else g = tr[j];                                                           \
                    if (DIV) {                                                                \
                        if (MODE == SCALE_ONE) g = g / s0;                                    \
                        else if (MODE == SCALE_ARRAY) g = g / sc[j];                          \
                    }                                                                         \
                    const T yv = y[j];                                                        \
                    const CNT_T s = (CNT_T)(yv >= g);                                         \
                    const T yn = s ? yv - eta : yv + eta;                                     \
                    y[j] = yn;                                                                \
                    if (MODE == SCALE_NONE) orow[j] = yn;                                     \
                    else if (MODE == SCALE_ONE) orow[j] = yn * s0;                            \
                    else orow[j] = yn * sc[j];                                                \
                    if (COUNT) c += s;                                                        \
                }                                                                             \
                j0 = j1;                                                                      \
            }                                                                                 \
            if (COUNT) cnt[t] += c;                                                           \
        }                                                                                     \
    }

/* Every (PRE, DIV) pair for one MODE and COUNT: the instantiations the driver dispatches to. */
#define CALL_PRE(BLOCKFN, MODE, COUNT)                                                        \
    do {                                                                                      \
        if (pre == PRE_NONE && !divide) BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_NONE, 0); \
        else if (pre == PRE_NONE) BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_NONE, 1); \
        else if (pre == PRE_SQUARE && !divide) BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_SQUARE, 0); \
        else if (pre == PRE_SQUARE) BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_SQUARE, 1); \
        else if (!divide) BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_ROWMUL, 0); \
        else BLOCKFN(tg, yb, etas, sb, ob, cnt, Tc, N, n, factor, rowlen, i0, MODE, COUNT, PRE_ROWMUL, 1); \
    } while (0)

/* The driver: split the N elements over threads in blocks, then reduce the spike counts. */
#define DEFINE_SCAN(NAME, BLOCKFN, T, CNT_T)                                                  \
    int NAME(const T *target, const T *y0, const T *etas, const T *scale, int64_t scale_len,  \
             T *out, T *y_final, int64_t *counts, int64_t Tc, int64_t N, int nthreads,        \
             const T *factor, int64_t rowlen, int pre, int divide)                            \
    {                                                                                         \
        if (Tc <= 0 || N <= 0) return 0;                                                      \
        const int mode = scale == NULL ? SCALE_NONE : (scale_len == 1 ? SCALE_ONE : SCALE_ARRAY); \
        if (mode == SCALE_ARRAY && (scale_len <= 0 || N % scale_len != 0)) return -1;         \
        if (pre < PRE_NONE || pre > PRE_ROWMUL) return -1;                                    \
        if (pre == PRE_ROWMUL && (factor == NULL || rowlen <= 0 || N % rowlen != 0)) return -1; \
        if (divide && mode == SCALE_NONE) divide = 0;                                         \
        if (nthreads < 1) nthreads = 1;                                                       \
        const int64_t by_work = (Tc * N) / SIGNGD_GRAIN;                                      \
        if ((int64_t)nthreads > by_work) nthreads = by_work < 1 ? 1 : (int)by_work;           \
        const int64_t align = 64 / (int64_t)sizeof(T);                                        \
        int64_t blk = (N + 4 * (int64_t)nthreads - 1) / (4 * (int64_t)nthreads);              \
        blk = (blk + align - 1) / align * align;                                              \
        if (blk < SIGNGD_MIN_BLOCK_BYTES / (int64_t)sizeof(T))                                \
            blk = SIGNGD_MIN_BLOCK_BYTES / (int64_t)sizeof(T);                                \
        if (blk > SIGNGD_MAX_BLOCK_BYTES / (int64_t)sizeof(T))                                \
            blk = SIGNGD_MAX_BLOCK_BYTES / (int64_t)sizeof(T);                                \
        if (blk > N) blk = N;                                                                 \
        const int64_t nblocks = (N + blk - 1) / blk;                                          \
        if ((int64_t)nthreads > nblocks) nthreads = (int)nblocks;                             \
        int failed = 0;                                                                       \
        _Pragma("omp parallel num_threads(nthreads)")                                         \
        {                                                                                     \
            const size_t bytes = ((sizeof(T) * (size_t)blk + 63) / 64) * 64;                  \
            T *yb = (T *)aligned_alloc(64, bytes);                                            \
            T *sb = (T *)aligned_alloc(64, bytes);                                            \
            CNT_T *cnt = NULL;                                                                \
            int64_t *tot = NULL;                                                              \
            if (counts != NULL) {                                                             \
                cnt = (CNT_T *)malloc(sizeof(CNT_T) * (size_t)Tc);                            \
                tot = (int64_t *)calloc((size_t)Tc, sizeof(int64_t));                         \
            }                                                                                 \
            if (yb == NULL || sb == NULL || (counts != NULL && (cnt == NULL || tot == NULL))) { \
                _Pragma("omp atomic write") failed = 1;                                       \
            }                                                                                 \
            _Pragma("omp barrier")                                                            \
            if (!failed) {                                                                    \
                _Pragma("omp for schedule(static)")                                           \
                for (int64_t b = 0; b < nblocks; ++b) {                                       \
                    const int64_t i0 = b * blk;                                               \
                    const int64_t n = (N - i0) < blk ? (N - i0) : blk;                        \
                    memcpy(yb, y0 + i0, sizeof(T) * (size_t)n);                               \
                    if (mode == SCALE_ARRAY) {                                                \
                        int64_t k = i0 % scale_len;                                           \
                        for (int64_t j = 0; j < n; ++j) {                                     \
                            sb[j] = scale[k];                                                 \
                            if (++k == scale_len) k = 0;                                      \
                        }                                                                     \
                    } else if (mode == SCALE_ONE) {                                           \
                        sb[0] = scale[0];                                                     \
                    }                                                                         \
                    if (cnt != NULL) memset(cnt, 0, sizeof(CNT_T) * (size_t)Tc);              \
                    const T *tg = target + i0;                                                \
                    T *ob = out + i0;                                                         \
                    if (cnt == NULL) {                                                        \
                        if (mode == SCALE_NONE) CALL_PRE(BLOCKFN, SCALE_NONE, 0);             \
                        else if (mode == SCALE_ONE) CALL_PRE(BLOCKFN, SCALE_ONE, 0);          \
                        else CALL_PRE(BLOCKFN, SCALE_ARRAY, 0);                               \
                    } else {                                                                  \
                        if (mode == SCALE_NONE) CALL_PRE(BLOCKFN, SCALE_NONE, 1);             \
                        else if (mode == SCALE_ONE) CALL_PRE(BLOCKFN, SCALE_ONE, 1);          \
                        else CALL_PRE(BLOCKFN, SCALE_ARRAY, 1);                               \
                        for (int64_t t = 0; t < Tc; ++t) tot[t] += (int64_t)cnt[t];           \
                    }                                                                         \
                    memcpy(y_final + i0, yb, sizeof(T) * (size_t)n);                          \
                }                                                                             \
                if (tot != NULL) {                                                            \
                    _Pragma("omp critical(signgd_scan_counts)")                               \
                    for (int64_t t = 0; t < Tc; ++t) counts[t] += tot[t];                     \
                }                                                                             \
            }                                                                                 \
            free(yb);                                                                         \
            free(sb);                                                                         \
            free(cnt);                                                                        \
            free(tot);                                                                        \
        }                                                                                     \
        return failed ? -2 : 0;                                                               \
    }

/* Counts within one block's row fit the narrow type (blk < 2^31); matching the value width lets the
 * compiler keep the compare mask and the count in the same vector lanes. */
DEFINE_BLOCK(block_f32, float, int32_t)
DEFINE_BLOCK(block_f64, double, int64_t)
DEFINE_SCAN(signgd_scan_f32, block_f32, float, int32_t)
DEFINE_SCAN(signgd_scan_f64, block_f64, double, int64_t)

/*
 * Adaptive signGD scan (signgd.schedules.adaptive's rule; the torch loop in
 * signgd/kernels/reference.py is the reference):
 *     s = y >= target[t, i];  dir = s ? -1 : +1
 *     g = d == 0 ? 1 : clamp(|d| * (dir * d > 0 ? grow : shrink), gmins[t], gmax)
 *     d = dir * g;  y = y + eta[t] * (pow2 ? dir * P(g) : d);  out[t, i] = y * scale(i)
 * y and d ([N]) are updated in place; target and out are contiguous [Tc, N] and out may be
 * target itself (each element is read before it is written). Same blocking as the plain scan.
 * P(g) (pow2, adaptive(pow2=True)): g rounded to the nearest power of two in log scale on its float64
 * bits, the exponent plus one where the fraction is at least sqrt(2)'s (reference.pow2_step does the
 * same integer operations, so both round alike).
 */
/* g's sign and the power of two of its exponent, one above where its fraction is at least up_fraction
 * (reference.round_to_pow2), on g's own bits: signgd_pow2_round for doubles, signgd_pow2_round_f32 for floats. For a
 * float, the float64 boundary shifted down by 29 bits and rounded up (a float32's float64 fraction is its own shifted
 * up by 29), exact for normal numbers. Why the float version: converting every value to double and back halves the
 * vector width (it made the graded scan twice the sparse one, the power-of-two adaptive scan 2.2x the plain one). */
#define DEFINE_POW2_ROUND(NAME, FT, UT, SIGN_EXPONENT, FRACTION, ONE)                         \
    static inline FT NAME(FT g, UT up_fraction)                                               \
    {                                                                                         \
        UT b;                                                                                 \
        memcpy(&b, &g, sizeof b);                                                             \
        UT e = b & (SIGN_EXPONENT);                                                           \
        if ((b & (FRACTION)) >= up_fraction) e += (ONE);                                      \
        FT r;                                                                                 \
        memcpy(&r, &e, sizeof r);                                                             \
        return r;                                                                             \
    }

DEFINE_POW2_ROUND(signgd_pow2_round, double, uint64_t, 0xFFF0000000000000ULL, 0x000FFFFFFFFFFFFFULL,
                  0x0010000000000000ULL)
DEFINE_POW2_ROUND(signgd_pow2_round_f32, float, uint32_t, 0xFF800000U, 0x007FFFFFU, 0x00800000U)

static inline double signgd_pow2(double g) { return signgd_pow2_round(g, 0x6A09E667F3BCDULL); }

/* signgd_pow2 of a float32 gain (positive and normal: within [gmins[t], gmax]); sqrt(2) in float32, 0x3504F3, is
 * below sqrt(2), so the boundary is 0x3504F4. */
static inline float signgd_pow2_f32(float g) { return signgd_pow2_round_f32(g, 0x3504F4U); }

/* A block's spike count of step t added to the shared per-step total (several threads add to it). */
#define SIGNGD_ADD_COUNT(counts, t, c)                                                        \
    do {                                                                                      \
        if ((counts) != NULL) {                                                               \
            _Pragma("omp atomic")                                                             \
            (counts)[t] += (int64_t)(c);                                                      \
        }                                                                                     \
    } while (0)

/* One block of the adaptive scan, all Tc steps. POW2 and SCALED are compile-time constants after inlining, and
 * the count has the values' width (as the plain scan's), so the innermost loop stays a plain vectorizable run. */
#define DEFINE_ADAPTIVE_BLOCK(NAME, T, CNT_T)                                                 \
    static inline __attribute__((always_inline)) void NAME(                                   \
        const T *target, T *restrict yb, T *restrict db, const T *restrict etas,              \
        const T *restrict gmins, const T *restrict sb, T *out, int64_t *counts,               \
        int64_t Tc, int64_t N, int64_t n, int64_t i0, T grow, T shrink, T gmax,               \
        const int POW2, const int SCALED)                                                     \
    {                                                                                         \
        for (int64_t t = 0; t < Tc; ++t) {                                                    \
            const T eta = etas[t];                                                            \
            const T gmin = gmins[t];                                                          \
            const T *tr = target + t * N + i0;                                                \
            T *orow = out + t * N + i0;                                                       \
            CNT_T c = 0;                                                                      \
            _Pragma("GCC ivdep")                                                              \
            for (int64_t j = 0; j < n; ++j) {                                                 \
                const T yv = yb[j];                                                           \
                const CNT_T s = (CNT_T)(yv >= tr[j]);                                         \
                const T dir = s ? (T)-1 : (T)1;                                               \
                const T dv = db[j];                                                           \
                const T a = dv < 0 ? -dv : dv;                                                \
                T g = (dir * dv > 0) ? a * grow : a * shrink;                                 \
                g = g < gmin ? gmin : (g > gmax ? gmax : g);                                  \
                if (dv == 0) g = (T)1;                                                        \
                const T dn = dir * g;                                                         \
                T st;                                                                         \
                if (POW2) st = dir * (sizeof(T) == 4 ? (T)signgd_pow2_f32((float)g)           \
                                                     : (T)signgd_pow2((double)g));            \
                else st = dn;                                                                 \
                const T yn = yv + eta * st;                                                   \
                db[j] = dn;                                                                   \
                yb[j] = yn;                                                                   \
                if (SCALED) orow[j] = yn * sb[j];                                             \
                else orow[j] = yn;                                                            \
                c += s;                                                                       \
            }                                                                                 \
            SIGNGD_ADD_COUNT(counts, t, c);                                                   \
        }                                                                                     \
    }

DEFINE_ADAPTIVE_BLOCK(adaptive_block_f32, float, int32_t)
DEFINE_ADAPTIVE_BLOCK(adaptive_block_f64, double, int64_t)

#define DEFINE_ADAPTIVE(NAME, BLOCK, T)                                                       \
    int NAME(const T *target, T *y, T *d, const T *etas, const T *scale, int64_t scale_len,   \
             T *out, int64_t *counts, int64_t Tc, int64_t N, int nthreads, T grow, T shrink,  \
             const T *gmins, T gmax, int pow2)                                                \
    {                                                                                         \
        if (Tc <= 0 || N <= 0) return 0;                                                      \
        if (scale != NULL && (scale_len <= 0 || N % scale_len != 0)) return -1;               \
        if (nthreads < 1) nthreads = 1;                                                       \
        const int64_t by_work = (Tc * N) / SIGNGD_GRAIN;                                      \
        if ((int64_t)nthreads > by_work) nthreads = by_work < 1 ? 1 : (int)by_work;           \
        const int64_t blk = 4096;                                                             \
        const int64_t nblocks = (N + blk - 1) / blk;                                          \
        if ((int64_t)nthreads > nblocks) nthreads = (int)nblocks;                             \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                    \
        for (int64_t b = 0; b < nblocks; ++b) {                                               \
            const int64_t i0 = b * blk;                                                       \
            const int64_t n = (N - i0) < blk ? (N - i0) : blk;                                \
            T sb[4096];                                                                       \
            if (scale != NULL) {                                                              \
                int64_t k = i0 % scale_len;                                                   \
                for (int64_t j = 0; j < n; ++j) {                                             \
                    sb[j] = scale[k];                                                         \
                    if (++k == scale_len) k = 0;                                              \
                }                                                                             \
            }                                                                                 \
            T *yb = y + i0, *db = d + i0;                                                     \
            if (pow2 && scale != NULL)                                                        \
                BLOCK(target, yb, db, etas, gmins, sb, out, counts, Tc, N, n, i0, grow, shrink, gmax, 1, 1);\
            else if (pow2)                                                                    \
                BLOCK(target, yb, db, etas, gmins, sb, out, counts, Tc, N, n, i0, grow, shrink, gmax, 1, 0);\
            else if (scale != NULL)                                                           \
                BLOCK(target, yb, db, etas, gmins, sb, out, counts, Tc, N, n, i0, grow, shrink, gmax, 0, 1);\
            else                                                                              \
                BLOCK(target, yb, db, etas, gmins, sb, out, counts, Tc, N, n, i0, grow, shrink, gmax, 0, 0);\
        }                                                                                     \
        return 0;                                                                             \
    }

DEFINE_ADAPTIVE(signgd_adaptive_f32, adaptive_block_f32, float)
DEFINE_ADAPTIVE(signgd_adaptive_f64, adaptive_block_f64, double)

/*
 * Sparse scan (dynamics="sparse"; the torch loop sparse_scan_torch in signgd/kernels/reference.py is
 * the reference): signed spikes, silent within a threshold.
 *     g = target[t, i]  (or target[t, i] / scale(i) when divide: the normalized target)
 *     d = g - y;  up = d > thr[t];  down = d < -thr[t]
 *     y = up ? y + eta[t] : (down ? y - eta[t] : y);  out[t, i] = y * scale(i)
 *     counts[t] += up + down
 * GRADED (dynamics="graded"): st = F(d); fire = |st| >= thr[t] && st != 0 && d == d (not NaN);
 * y = fire ? y + st : y; counts[t] += fire; with F(d) = sign(d) 2^floor(log2 |d| + 1/64):
 * the sign and exponent bits of d's float64 value, the exponent raised by one where the fraction is at least
 * 2^(63/64)'s (reference.graded_step does the same integer operations and says why the margin).
 * y ([N]) is updated in place; target and out are contiguous [Tc, N] and out may be target itself
 * (each element is read before it is written). Same blocking as the adaptive scan; MODE and DIV are
 * compile-time constants after inlining, so each variant's inner loop is a plain vectorizable run;
 * a block's counts (n <= 4096) fit the narrow type that matches the value width.
 */
static inline double signgd_graded_step(double d) { return signgd_pow2_round(d, 0xFA7C1819E90D8ULL); }

/* The same step on a float32 gap's own bits (signgd_pow2_round_f32: >= 0xFA7C1819E90D8 exactly when >= 0x7D3E0D).
 * Exact for normal gaps; a subnormal one (exponent bits 0) would get 0 or FLT_MIN instead of its own power of two, so the caller
 * uses this only at steps whose threshold is above FLT_MIN, where no subnormal gap fires either way. */
static inline float signgd_graded_step_f32(float d) { return signgd_pow2_round_f32(d, 0x7D3E0DU); }

/* One step of one block of the sparse scan (FAST32: the graded step on float32 bits, signgd_graded_step_f32). */
#define SPARSE_STEP(T, CNT_T, MODE, DIV, GRADED, FAST32)                                      \
            _Pragma("GCC ivdep")                                                              \
            for (int64_t j = 0; j < n; ++j) {                                                 \
                T g = tr[j];                                                                  \
                if (DIV) {                                                                    \
                    if (MODE == SCALE_ONE) g = g / s0;                                        \
                    else if (MODE == SCALE_ARRAY) g = g / sb[j];                              \
                }                                                                             \
                const T yv = yb[j];                                                           \
                const T dv = g - yv;                                                          \
                T yn;                                                                         \
                if (GRADED) {  /* reference.graded_move */                                    \
                    const T st = FAST32 ? (T)signgd_graded_step_f32((float)dv)                 \
                                        : (T)signgd_graded_step((double)dv);                  \
                    const T ast = st < 0 ? -st : st;                                          \
                    const CNT_T fire = (ast >= thr) & (st != 0) & (dv == dv);                 \
                    yn = fire ? yv + st : yv;                                                 \
                    c += fire;                                                                \
                } else {                                                                      \
                    const CNT_T up = dv > thr;                                                \
                    const CNT_T down = dv < nthr;                                             \
                    const T yu = yv + eta;                                                    \
                    const T yd = yv - eta;                                                    \
                    yn = up ? yu : (down ? yd : yv);                                          \
                    c += up + down;                                                           \
                }                                                                             \
                yb[j] = yn;                                                                   \
                if (MODE == SCALE_NONE) orow[j] = yn;                                         \
                else if (MODE == SCALE_ONE) orow[j] = yn * s0;                                \
                else orow[j] = yn * sb[j];                                                    \
            }

#define DEFINE_SPARSE_BLOCK(NAME, T, CNT_T)                                                   \
    static inline __attribute__((always_inline)) void NAME(                                  \
        const T *target, T *restrict yb, const T *restrict etas, const T *restrict thrs,     \
        const T *restrict sb, T *out, int64_t *counts, int64_t Tc, int64_t N, int64_t n,     \
        int64_t i0, const int MODE, const int DIV, const int GRADED)                          \
    {                                                                                         \
        const T s0 = (MODE == SCALE_ONE) ? sb[0] : (T)1;                                      \
        for (int64_t t = 0; t < Tc; ++t) {                                                    \
            const T eta = etas[t];                                                            \
            const T thr = thrs[t];                                                            \
            const T nthr = -thr;                                                              \
            const T *tr = target + t * N + i0;                                                \
            T *orow = out + t * N + i0;                                                       \
            CNT_T c = 0;                                                                      \
            if (GRADED && sizeof(T) == 4 && thr > (T)FLT_MIN) {                               \
                SPARSE_STEP(T, CNT_T, MODE, DIV, 1, 1)                                        \
            } else {                                                                          \
                SPARSE_STEP(T, CNT_T, MODE, DIV, GRADED, 0)                                   \
            }                                                                                 \
            SIGNGD_ADD_COUNT(counts, t, c);                                                   \
        }                                                                                     \
    }

/* One block of the sparse scan with MODE, DIV and GRADED as compile-time constants. */
#define SPARSE_DISPATCH(BLOCKFN, G)                                                           \
    {                                                                                         \
        if (mode == SCALE_NONE) BLOCKFN(target, yb, etas, thrs, sb, out, counts, Tc, N, n, i0, SCALE_NONE, 0, G); \
        else if (mode == SCALE_ONE && !divide) BLOCKFN(target, yb, etas, thrs, sb, out, counts, Tc, N, n, i0, SCALE_ONE, 0, G); \
        else if (mode == SCALE_ONE) BLOCKFN(target, yb, etas, thrs, sb, out, counts, Tc, N, n, i0, SCALE_ONE, 1, G); \
        else if (!divide) BLOCKFN(target, yb, etas, thrs, sb, out, counts, Tc, N, n, i0, SCALE_ARRAY, 0, G); \
        else BLOCKFN(target, yb, etas, thrs, sb, out, counts, Tc, N, n, i0, SCALE_ARRAY, 1, G); \
    }

#define DEFINE_SPARSE(NAME, BLOCKFN, T)                                                       \
    int NAME(const T *target, T *y, const T *etas, const T *thrs, const T *scale,            \
             int64_t scale_len, T *out, int64_t *counts, int64_t Tc, int64_t N, int nthreads, \
             int divide, int graded)                                                          \
    {                                                                                         \
        if (Tc <= 0 || N <= 0) return 0;                                                      \
        if (scale != NULL && (scale_len <= 0 || N % scale_len != 0)) return -1;               \
        const int mode = scale == NULL ? SCALE_NONE : (scale_len == 1 ? SCALE_ONE : SCALE_ARRAY); \
        if (mode == SCALE_NONE) divide = 0;                                                   \
        if (nthreads < 1) nthreads = 1;                                                       \
        const int64_t by_work = (Tc * N) / SIGNGD_GRAIN;                                      \
        if ((int64_t)nthreads > by_work) nthreads = by_work < 1 ? 1 : (int)by_work;           \
        const int64_t blk = 4096;                                                             \
        const int64_t nblocks = (N + blk - 1) / blk;                                          \
        if ((int64_t)nthreads > nblocks) nthreads = (int)nblocks;                             \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                    \
        for (int64_t b = 0; b < nblocks; ++b) {                                               \
            const int64_t i0 = b * blk;                                                       \
            const int64_t n = (N - i0) < blk ? (N - i0) : blk;                                \
            T sb[4096];                                                                       \
            if (mode == SCALE_ARRAY) {                                                        \
                int64_t k = i0 % scale_len;                                                   \
                for (int64_t j = 0; j < n; ++j) {                                             \
                    sb[j] = scale[k];                                                         \
                    if (++k == scale_len) k = 0;                                              \
                }                                                                             \
            } else if (mode == SCALE_ONE) {                                                   \
                sb[0] = scale[0];                                                             \
            }                                                                                 \
            T *yb = y + i0;                                                                   \
            if (graded) SPARSE_DISPATCH(BLOCKFN, 1) else SPARSE_DISPATCH(BLOCKFN, 0)            \
        }                                                                                     \
        return 0;                                                                             \
    }

DEFINE_SPARSE_BLOCK(sparse_block_f32, float, int32_t)
DEFINE_SPARSE_BLOCK(sparse_block_f64, double, int64_t)
DEFINE_SPARSE(signgd_sparse_f32, sparse_block_f32, float)
DEFINE_SPARSE(signgd_sparse_f64, sparse_block_f64, double)
