/* The single-view ray march in one pass per ray: densities, compositing, depth and opacity.
 *
 * Built and called by kdbts_ros/core/model/native_march.py (its docstring says why by hand), with the
 * arithmetic of ray_march.march: per sample logit = b + sum_h w_h relu(per_ray_h + per_sample_h,s),
 * sigma = softplus(logit), alpha = 1 - exp(-delta sigma) (the last alpha 1), transmittance the product
 * of (1 - alpha + 1e-10) before it, depth = sum weight t, opacity = 1 - the last weight.
 * Plain C with GCC/Clang vector extensions: AVX2 where the flags allow it, two SSE/NEON halves otherwise.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 16 /* samples decoded before the transmittance is checked: two vectors */

static inline float relu(float x) { return x > 0.0f ? x : 0.0f; }
static inline float bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t float_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

/* e^x for x in [-87, 88] to about 1 ulp (Cephes expf: x = n ln2 + r, a degree-6 polynomial in r) */
static inline float exp_f(float x) {
    x = x < -86.0f ? -86.0f : x;
    x = x > 88.3f ? 88.3f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * bits_to_float(((int32_t)n + 127) << 23);
}

/* log(x) for normal x > 0 (Cephes logf: the mantissa in [sqrt(1/2), sqrt(2)), a degree-9 polynomial) */
static inline float log_f(float x) {
    int32_t i = float_to_bits(x);
    int32_t e = ((i >> 23) & 0xff) - 126;
    float m = bits_to_float((i & 0x007fffff) | 0x3f000000); /* [0.5, 1) */
    int32_t small = m < 0.707106781186547524f;
    e -= small;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = p * m * z;
    float fe = (float)e;
    y += fe * -2.12194440e-4f;
    y += -0.5f * z;
    return m + y + fe * 0.693359375f;
}

/* torch's softplus: x above 20 is its own, else log1p(exp(x)), as log(1 + u) corrected for the rounding of 1 + u */
static inline float softplus_f(float x) {
    float u = exp_f(x < 20.0f ? x : 20.0f);
    float v = 1.0f + u;
    float l = log_f(v) - ((v - 1.0f) - u) / v;
    return x > 20.0f ? x : l;
}

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
#define RAYS 8 /* rays marched together: the compositing runs with one ray per vector lane */
#define MAX_HIDDEN 512 /* a ray group's pre-activations stay on the stack (16 KiB) */

static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline v8 splat8(float x) { v8 v = {x, x, x, x, x, x, x, x}; return v; }
static inline v8 abs8(v8 x) { return (v8)((v8i)x & 0x7fffffff); }
static inline float hsum8(v8 x) { float s = 0.0f; for (int k = 0; k < 8; k++) s += x[k]; return s; }

/* What every thread reads: the call's arguments and the per-sample terms prepared once. */
struct march_job {
    const float *rows, *tap_w, *xy_term, *ps, *half_w, *lin_s, *delta, *t;
    const int64_t *taps;
    float b, stop;
    long hidden, samples, padded, rays, slice;
    float *depth, *opacity;
    long next; /* the first ray of the next slice, taken atomically: rays that stop early are not spread evenly */
};

/* A ray's first-layer pre-activation (hidden) without the z code: the folded map's texels at its four taps,
 * weighted in bilinear.bilinear_rows' order, plus its x, y code term. */
static void per_ray(const struct march_job *job, long r, float *a) {
    const long hidden = job->hidden;
    const int64_t *tap = job->taps + 4 * r;
    const float *tw = job->tap_w + 4 * r, *code = job->xy_term + r * hidden;
    const float *p0 = job->rows + tap[0] * hidden, *p1 = job->rows + tap[1] * hidden;
    const float *p2 = job->rows + tap[2] * hidden, *p3 = job->rows + tap[3] * hidden;
    long h = 0;
    for (; h + 8 <= hidden; h += 8) {
        v8 v = load8(p0 + h) * tw[0] + load8(p1 + h) * tw[1];
        v = v + load8(p2 + h) * tw[2] + load8(p3 + h) * tw[3] + load8(code + h);
        memcpy(a + h, &v, sizeof v);
    }
    for (; h < hidden; h++) a[h] = (p0[h] * tw[0] + p1[h] * tw[1]) + p2[h] * tw[2] + p3[h] * tw[3] + code[h];
}

static void march_rays(const struct march_job *job, long first, long last) {
    const float *ps = job->ps, *half_w = job->half_w, *lin_s = job->lin_s;
    const float *delta = job->delta, *t = job->t;
    const float b = job->b, stop = job->stop;
    const long hidden = job->hidden, samples = job->samples, padded = job->padded;
    float *depth = job->depth, *opacity = job->opacity;
    for (long r0 = first; r0 < last; r0 += RAYS) {
        long nr = last - r0 < RAYS ? last - r0 : RAYS;
        float lin_r[RAYS], pre[RAYS][MAX_HIDDEN];
        for (long i = 0; i < RAYS; i++) {
            const float *a = pre[i];
            per_ray(job, r0 + (i < nr ? i : 0), pre[i]);
            v8 dot8 = splat8(0.0f);
            long h = 0;
            for (; h + 8 <= hidden; h += 8) dot8 += load8(half_w + h) * load8(a + h);
            float dot = hsum8(dot8);
            for (; h < hidden; h++) dot += half_w[h] * a[h];
            lin_r[i] = b + dot;
        }
        v8 trans = splat8(1.0f), d = splat8(0.0f), w_last = splat8(0.0f);
        for (long s0 = 0; s0 < samples; s0 += BLOCK) {
            long n = samples - s0 < BLOCK ? samples - s0 : BLOCK;
            float keep[BLOCK][RAYS]; /* sample-major: the compositing below runs over rays in lanes */
            for (long i = 0; i < RAYS; i++) {
                const float *a = pre[i];
                v8 acc0 = splat8(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
                long h = 0;
                /* w relu(x) = w x / 2 + w |x| / 2: the linear halves are summed once per ray and per sample */
                for (; h + 1 < hidden; h += 2) {
                    const float *p0 = ps + h * padded + s0, *p1 = p0 + padded;
                    v8 a0 = splat8(a[h]), a1 = splat8(a[h + 1]), w0 = splat8(half_w[h]), w1 = splat8(half_w[h + 1]);
                    acc0 += w0 * abs8(a0 + load8(p0));
                    acc1 += w0 * abs8(a0 + load8(p0 + 8));
                    acc2 += w1 * abs8(a1 + load8(p1));
                    acc3 += w1 * abs8(a1 + load8(p1 + 8));
                }
                if (h < hidden) {
                    const float *p0 = ps + h * padded + s0;
                    v8 a0 = splat8(a[h]), w0 = splat8(half_w[h]);
                    acc0 += w0 * abs8(a0 + load8(p0));
                    acc1 += w0 * abs8(a0 + load8(p0 + 8));
                }
                v8 lo = acc0 + acc2 + load8(lin_s + s0) + lin_r[i], hi = acc1 + acc3 + load8(lin_s + s0 + 8) + lin_r[i];
                for (int k = 0; k < 8; k++) {
                    keep[k][i] = lo[k];
                    keep[k + 8][i] = hi[k];
                }
            }
            /* all the block's samples at once: the polynomials' chains of dependent operations overlap */
            for (int k = 0; k < BLOCK; k++)
                for (int i = 0; i < RAYS; i++) keep[k][i] = exp_f(-delta[s0 + k] * relu(softplus_f(keep[k][i])));
            for (int k = 0; k < n; k++) {
                long s = s0 + k;
                v8 alpha = s == samples - 1 ? splat8(1.0f) : 1.0f - load8(keep[k]);
                v8 weight = alpha * trans;
                d += weight * t[s];
                w_last = weight;
                trans *= 1.0f - alpha + 1e-10f;
                trans = (v8)((v8i)trans & (trans >= 1e-30f)); /* subnormal products take microcode assists */
            }
            if (s0 + n < samples) {
                int spent = 1;
                for (long i = 0; i < nr; i++) spent &= trans[i] < stop;
                if (spent) { w_last = splat8(0.0f); break; }
            }
        }
        for (long i = 0; i < nr; i++) {
            depth[r0 + i] = d[i];
            float o = 1.0f - w_last[i];
            opacity[r0 + i] = o < 0.0f ? 0.0f : (o > 1.0f ? 1.0f : o);
        }
    }
}

static void *march_worker(void *arg) {
    struct march_job *job = arg;
    for (;;) {
        long first = __atomic_fetch_add(&job->next, job->slice, __ATOMIC_RELAXED);
        if (first >= job->rays) return NULL;
        march_rays(job, first, first + job->slice < job->rays ? first + job->slice : job->rays);
    }
}

/* Depth and opacity of `rays` rays on `threads` threads (the caller's among them). A ray's map features come
 * from `rows` (map pixels x hidden, channels-last) at its four `taps` (rays x 4) with weights `tap_w`. Returns 0,
 * -1 when out of memory, -2 when `hidden` is above MAX_HIDDEN. Threads are started per call: a few tens of microseconds against milliseconds of work, and no pool
 * to outlive the library. */
int march(const float *rows, const int64_t *taps, const float *tap_w, const float *xy_term, const float *per_sample,
          const float *w, float b, const float *t, long rays, long hidden, long samples, float stop, long threads,
          float *depth, float *opacity) {
    if (hidden > MAX_HIDDEN) return -2;
    long padded = (samples + BLOCK - 1) / BLOCK * BLOCK;
    float *delta = malloc(sizeof(float) * padded), *lin_s = malloc(sizeof(float) * padded);
    float *half_w = malloc(sizeof(float) * hidden), *ps = malloc(sizeof(float) * hidden * padded);
    pthread_t *tid = malloc(sizeof(pthread_t) * (threads > 1 ? threads : 1));
    if (!delta || !lin_s || !half_w || !ps || !tid) {
        free(delta), free(lin_s), free(half_w), free(ps), free(tid);
        return -1;
    }
    for (long s = 0; s < padded; s++) delta[s] = s + 1 < samples ? fabsf(t[s + 1] - t[s]) : 1e10f;
    for (long h = 0; h < hidden; h++) half_w[h] = 0.5f * w[h];
    for (long s = 0; s < padded; s++) lin_s[s] = 0.0f;
    for (long h = 0; h < hidden; h++)
        for (long s = 0; s < padded; s++) {
            ps[h * padded + s] = s < samples ? per_sample[h * samples + s] : 0.0f;
            lin_s[s] += half_w[h] * ps[h * padded + s];
        }
    long slice = rays / (threads * 8 > 0 ? threads * 8 : 1) / RAYS * RAYS;
    struct march_job job = {rows, tap_w, xy_term, ps, half_w, lin_s, delta, t, taps, b, stop, hidden, samples,
                            padded, rays, slice > RAYS ? slice : RAYS, depth, opacity, 0};
    long started = 0;
    for (; started + 1 < threads; started++) /* a thread that cannot start leaves its share to the others */
        if (pthread_create(&tid[started], NULL, march_worker, &job) != 0) break;
    march_worker(&job);
    for (long i = 0; i < started; i++) pthread_join(tid[i], NULL);
    free(delta), free(lin_s), free(half_w), free(ps), free(tid);
    return 0;
}
