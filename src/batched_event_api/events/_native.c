/* NDJSON -> CSV rows in one native pass, for the plain shapes of the contract.
 *
 * transcode(body, max_line) -> (csv, times, ends, stop)
 *
 * csv   : the rows, each ending in '\n'              (a read-only buffer)
 * times : int64 UTC nanoseconds, one per row          (a read-only buffer)
 * ends  : int64 offset just past each row's '\n'     (a read-only buffer)
 * stop  : how far the pass went: len(body), or the start of the first line it left
 *
 * The pass renders exactly what the Python path (decode.py + render.py) renders for the lines it
 * takes, and stops at the first line that is anything but plain: an error of any kind, a year
 * outside 1700..2200 (a time outside the accepted range, timestamps.EARLIEST_NS..LATEST_NS, never
 * passes), a nested value, a duplicate or escaped key, a float at a power of two or
 * below the normal range. The Python path takes over from there and gives the precise answer
 * (including the line-numbered 400), so stopping is always safe and only costs time.
 *
 * It runs without the GIL, so two pieces of a body can be transcoded on two cores. For that
 * reason floats are handled with exact integer arithmetic and the C library (strtod, snprintf
 * under the "C" locale), never with Python's float routines.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, GIVE_UP = 1, NO_MEMORY = -1 };

/* -- growable byte buffer (plain malloc: used without the GIL) ------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int reserve(Buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap += cap / 2 + 4096;
    char *p = realloc(b->p, cap);
    if (p == NULL) return NO_MEMORY;
    b->p = p;
    b->cap = cap;
    return OK;
}

static inline void put(Buf *b, const void *s, size_t n) {
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void put1(Buf *b, char c) { b->p[b->len++] = c; }

/* -- JSON scanning -------------------------------------------------------------------------- */

typedef const unsigned char *Ptr;

static inline Ptr skip_ws(Ptr p, Ptr e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Length of a valid UTF-8 sequence starting at p (first byte >= 0x80), or 0. */
static int utf8_len(Ptr p, Ptr e) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) return (e - p >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (e - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (e - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

typedef struct {
    Ptr p;      /* NULL: absent or null */
    size_t n;
    int escaped;
    int comma; /* holds a ',' (unescaped strings can hold no other character that needs quotes) */
} Text;

/* Bytes that end the quick loop over a string: '"', '\\', ',', controls and non-ASCII. */
static unsigned char SPECIAL[256];

static void init_special(void) {
    for (int c = 0; c < 256; c++) SPECIAL[c] = c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == ',';
}

/* *pp is just past the opening quote; on success it is just past the closing one. */
static int scan_string(Ptr *pp, Ptr e, Text *t) {
    Ptr p = *pp, start = p;
    int escaped = 0, comma = 0;
    for (;;) {
        while (e - p >= 4 && !(SPECIAL[p[0]] | SPECIAL[p[1]] | SPECIAL[p[2]] | SPECIAL[p[3]])) p += 4;
        while (p < e && !SPECIAL[*p]) p++;
        if (p >= e) return GIVE_UP;
        unsigned char c = *p;
        if (c == '"') {
            t->p = start;
            t->n = (size_t)(p - start);
            t->escaped = escaped;
            t->comma = comma;
            *pp = p + 1;
            return OK;
        }
        if (c == '\\') {
            escaped = 1;
            p += 2;
        } else if (c == ',') {
            comma = 1;
            p++;
        } else if (c < 0x20) {
            return GIVE_UP;
        } else {
            int n = utf8_len(p, e);
            if (n == 0) return GIVE_UP;
            p += n;
        }
    }
}

static int hex4(Ptr p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return GIVE_UP;
    }
    *out = v;
    return OK;
}

/* The string's value, escapes resolved, into t (which is reset). */
static int unescape(const Text *s, Buf *t) {
    t->len = 0;
    if (reserve(t, s->n) != OK) return NO_MEMORY;
    Ptr p = s->p, e = s->p + s->n;
    while (p < e) {
        if (*p != '\\') {
            put1(t, (char)*p++);
            continue;
        }
        if (e - p < 2) return GIVE_UP; /* a backslash at the very end: never read past the text */
        unsigned char c = p[1];
        p += 2;
        switch (c) {
        case '"': put1(t, '"'); break;
        case '\\': put1(t, '\\'); break;
        case '/': put1(t, '/'); break;
        case 'b': put1(t, '\b'); break;
        case 'f': put1(t, '\f'); break;
        case 'n': put1(t, '\n'); break;
        case 'r': put1(t, '\r'); break;
        case 't': put1(t, '\t'); break;
        case 'u': {
            unsigned cp, low;
            if (e - p < 4 || hex4(p, &cp) != OK) return GIVE_UP;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &low) != OK) return GIVE_UP;
                if (low < 0xDC00 || low > 0xDFFF) return GIVE_UP;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return GIVE_UP; /* a lone surrogate: leave it to the Python path */
            }
            if (cp < 0x80) {
                put1(t, (char)cp);
            } else if (cp < 0x800) {
                put1(t, (char)(0xC0 | (cp >> 6)));
                put1(t, (char)(0x80 | (cp & 0x3F)));
            } else if (cp < 0x10000) {
                put1(t, (char)(0xE0 | (cp >> 12)));
                put1(t, (char)(0x80 | ((cp >> 6) & 0x3F)));
                put1(t, (char)(0x80 | (cp & 0x3F)));
            } else {
                put1(t, (char)(0xF0 | (cp >> 18)));
                put1(t, (char)(0x80 | ((cp >> 12) & 0x3F)));
                put1(t, (char)(0x80 | ((cp >> 6) & 0x3F)));
                put1(t, (char)(0x80 | (cp & 0x3F)));
            }
            break;
        }
        default:
            return GIVE_UP;
        }
    }
    return OK;
}

/* A JSON number; sets *integer when it has neither fraction nor exponent. */
static Ptr scan_number(Ptr p, Ptr e, int *integer) {
    if (p < e && *p == '-') p++;
    if (p >= e) return NULL;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < e && is_digit(*p)) p++;
    else return NULL;
    *integer = 1;
    if (p < e && *p == '.') {
        p++;
        *integer = 0;
        if (p >= e || !is_digit(*p)) return NULL;
        while (p < e && is_digit(*p)) p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        *integer = 0;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || !is_digit(*p)) return NULL;
        while (p < e && is_digit(*p)) p++;
    }
    return p;
}

static int literal(Ptr *pp, Ptr e, const char *word, size_t n) {
    if ((size_t)(e - *pp) < n || memcmp(*pp, word, n) != 0) return 0;
    *pp += n;
    return 1;
}

/* -- CSV fields (Go encoding/csv) ----------------------------------------------------------- */

/* Does the value start with a character Go's unicode.IsSpace accepts? */
static int starts_with_space(Ptr s, size_t n) {
    unsigned char c = s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r')) return 1;
    if (c < 0x80 || n < 2) return 0;
    if (c == 0xC2) return s[1] == 0x85 || s[1] == 0xA0;
    if (n < 3) return 0;
    if (c == 0xE1) return s[1] == 0x9A && s[2] == 0x80;
    if (c == 0xE2 && s[1] == 0x80) return s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF;
    if (c == 0xE2 && s[1] == 0x81) return s[2] == 0x9F;
    if (c == 0xE3) return s[1] == 0x80 && s[2] == 0x80;
    return 0;
}

static void put_quoted(Buf *o, Ptr s, size_t n) {
    put1(o, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"') put1(o, '"');
        put1(o, (char)s[i]);
    }
    put1(o, '"');
}

/* Any value (escapes resolved): quoted when Go's fieldNeedsQuotes says so. */
static void put_field(Buf *o, Ptr s, size_t n) {
    if (n == 0) return;
    int quote = (n == 2 && s[0] == '\\' && s[1] == '.') || starts_with_space(s, n);
    for (size_t i = 0; i < n && !quote; i++) quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (quote) put_quoted(o, s, n);
    else put(o, s, n);
}

/* Room for any one field of a line of n bytes (quoting at most doubles a string). */
#define FIELD_ROOM(n) (2 * (n) + 2)

static int put_text(Buf *o, const Text *t, Buf *scratch) {
    if (t->p == NULL) return OK;
    if (!t->escaped) { /* raw JSON text: only a comma or a leading space can call for quotes */
        if (t->n && (t->comma || starts_with_space(t->p, t->n))) put_quoted(o, t->p, t->n);
        else put(o, t->p, t->n);
        return OK;
    }
    int rc = unescape(t, scratch);
    if (rc != OK) return rc;
    put_field(o, (Ptr)scratch->p, scratch->len);
    return OK;
}

/* -- time: YYYY-MM-DDTHH:MM:SS[.f…]Z -------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int two(Ptr p) { return is_digit(p[0]) && is_digit(p[1]) ? (p[0] - '0') * 10 + (p[1] - '0') : -1; }

static const int DAYS_IN_MONTH[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

/* The accepted instants, EARLIEST_NS <= t < LATEST_NS (1678-01-01T00:00:00Z, 2262-01-01T00:00:00Z):
 * timestamps.EARLIEST_NS and LATEST_NS, the one bound the service has (a test holds them equal).
 * The years taken here (1700..2200) lie inside it; the check says so rather than relying on it. */
#define EARLIEST_NS (-9214560000LL * 1000000000LL)
#define LATEST_NS (9214646400LL * 1000000000LL)

/* RFC 3339 with a zone (`Z` or ±hh:mm); writes Go's RFC3339Nano text in the event's own offset. */
static int put_time(Buf *o, Ptr s, size_t n, int64_t *ns) {
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') return GIVE_UP;
    int hi = two(s), lo = two(s + 2), month = two(s + 5), day = two(s + 8);
    int hour = two(s + 11), minute = two(s + 14), second = two(s + 17);
    if (hi < 0 || lo < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 ||
        minute > 59 || second < 0 || second > 59)
        return GIVE_UP;
    int year = hi * 100 + lo;
    if (year < 1700 || year > 2200) return GIVE_UP; /* int64 nanoseconds: the Python path has the rest */
    int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    if (day > DAYS_IN_MONTH[month] + (month == 2 && leap)) return GIVE_UP;
    size_t zone = s[n - 1] == 'Z' ? 1 : 6; /* the zone's length */
    int offset = 0;                        /* seconds east of UTC */
    if (zone == 6) {
        Ptr z = s + n - 6;
        int zh = n >= 25 ? two(z + 1) : -1, zm = n >= 25 ? two(z + 4) : -1;
        if ((z[0] != '+' && z[0] != '-') || z[3] != ':' || zh < 0 || zh > 23 || zm < 0 || zm > 59) return GIVE_UP;
        offset = (z[0] == '-' ? -1 : 1) * (zh * 3600 + zm * 60);
    }
    int64_t nanos = 0;
    if (n > 19 + zone) {
        if (s[19] != '.') return GIVE_UP;
        size_t digits = n - 20 - zone;
        if (digits == 0) return GIVE_UP;
        for (size_t i = 0; i < digits; i++) {
            if (!is_digit(s[20 + i])) return GIVE_UP;
            if (i < 9) nanos = nanos * 10 + (s[20 + i] - '0');
        }
        for (size_t i = digits; i < 9; i++) nanos *= 10;
    }
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    *ns = seconds * 1000000000 + nanos;
    if (*ns < EARLIEST_NS || *ns >= LATEST_NS) return GIVE_UP; /* the Python path answers the 400 */
    put(o, s, 19);
    if (nanos) {
        char frac[10];
        int64_t v = nanos;
        for (int i = 8; i >= 0; i--, v /= 10) frac[i] = (char)('0' + v % 10);
        int len = 9;
        while (frac[len - 1] == '0') len--;
        put1(o, '.');
        put(o, frac, (size_t)len);
    }
    if (offset == 0) put1(o, 'Z');
    else put(o, s + n - 6, 6);
    return OK;
}

/* -- credits: Go strconv.FormatFloat(x, 'f', -1, 64) ---------------------------------------- */

/* Writes ±0.D×10^point in plain decimal notation. D has no leading or trailing zeros. */
static void put_decimal(Buf *o, int negative, const char *digits, int nd, int point) {
    if (negative) put1(o, '-');
    if (nd == 0) {
        put1(o, '0');
        return;
    }
    if (point <= 0) {
        put(o, "0.", 2);
        memset(o->p + o->len, '0', (size_t)-point);
        o->len += (size_t)-point;
        put(o, digits, (size_t)nd);
    } else if (point >= nd) {
        put(o, digits, (size_t)nd);
        memset(o->p + o->len, '0', (size_t)(point - nd));
        o->len += (size_t)(point - nd);
    } else {
        put(o, digits, (size_t)point);
        put1(o, '.');
        put(o, digits + point, (size_t)(nd - point));
    }
}

typedef unsigned __int128 u128;

/* The decimal digits of v into out (no terminator); returns how many. */
static int digits_of(u128 v, char *out) {
    char reversed[40];
    int k = 0, n = 0;
    do reversed[k++] = (char)('0' + (int)(v % 10)); while ((v /= 10) != 0);
    while (k) out[n++] = reversed[--k];
    return n;
}

/* Does m×10^e read back as exactly x? (Any magnitude; used where the exact path below can't go.) */
static int reads_as(uint64_t m, int e, double x) {
    char text[48];
    int n = digits_of(m, text);
    text[n++] = 'e';
    if (e < 0) text[n++] = '-', e = -e;
    n += digits_of((u128)e, text + n);
    text[n] = 0;
    return strtod(text, NULL) == x;
}

/* Exact decimal-versus-binary arithmetic for the usual magnitudes (a float with a fraction,
 * below 2^53, and decimals with up to 21 places), in 128-bit integers: no strtod needed. */

static const double EXACT_POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static u128 pow10_128(int k) { /* 0 <= k <= 21 */
    u128 r = 1;
    while (k--) r *= 10;
    return r;
}

/* Clinger's fast path: with m below 2^53 and a power of ten a double holds exactly, one IEEE
 * operation rounds correctly, so this is the float strtod would give. */
static int nearest_float(uint64_t m, int e, double *x) {
    if (m >= (1ull << 53) || e < -22 || e > 22) return 0;
    *x = e < 0 ? (double)m / EXACT_POW10[-e] : (double)m * EXACT_POW10[e];
    return 1;
}

typedef struct {
    uint64_t m; /* x = m × 2^q */
    int q;
    int even;     /* the interval's ends read back as x (round half to even) */
    int lopsided; /* a power of two: the interval below is half as wide */
} Binary;

static void binary_of(double x, Binary *b) { /* x positive and normal */
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint64_t fraction = bits & ((1ull << 52) - 1);
    int exponent = (int)(bits >> 52) & 0x7FF;
    b->m = fraction | (1ull << 52);
    b->q = exponent - 1075;
    b->even = (b->m & 1) == 0;
    b->lopsided = fraction == 0 && exponent > 1;
}

/* The 128-bit arithmetic below holds for decimals with a last place 10^e, -21 <= e <= -1 (so that
 * e + 1 is a last place too), and floats with -64 <= q <= 0. */
#define EXACT(b, e) ((b)->q <= 0 && (b)->q >= -64 && (e) >= -21 && (e) <= -1)

/* Does a×10^f read back as x? Everything scaled by 2^(2-q)×10^-f. */
static int inside(const Binary *b, uint64_t a, int f) {
    u128 scale = pow10_128(-f);
    u128 d = ((u128)b->m << 2) * scale;
    u128 v = (u128)a << (2 - b->q);
    u128 above = scale << 1, below = b->lopsided ? scale : scale << 1;
    if (v >= d) return b->even ? v - d <= above : v - d < above;
    return b->even ? d - v <= below : d - v < below;
}

/* x / 10^f rounded half to even: the closest decimal with that last place. */
static u128 closest(const Binary *b, int f) {
    u128 n = (u128)b->m * pow10_128(-f);
    int shift = -b->q;
    if (shift == 0) return n;
    u128 r = n >> shift, rest = n & (((u128)1 << shift) - 1), half = (u128)1 << (shift - 1);
    return rest > half || (rest == half && (r & 1)) ? r + 1 : r;
}

static void put_scaled(Buf *o, int negative, u128 r, int f) { /* ±r×10^f */
    char digits[40];
    int n = digits_of(r, digits);
    int point = n + f;
    while (n > 0 && digits[n - 1] == '0') n--;
    put_decimal(o, negative, digits, n, point);
}

#define MAX_LITERAL 100
#define MAX_POINT 330 /* beyond this the literal over- or underflows: leave it to the Python path */

/* Room for the longest credits text this writes: "-0." + 330 zeros + 17 digits. */
#define CREDITS_ROOM (MAX_POINT + 24)

/* Go picks the shortest decimal that reads back as x, the closest to x among those. */
static int put_credits(Buf *o, Ptr s, size_t n) {
    if (n > MAX_LITERAL) return GIVE_UP;
    int negative = s[0] == '-';
    char digits[MAX_LITERAL + 1];
    int nd = 0, point = 0;
    size_t i = (size_t)negative;
    for (; i < n && is_digit(s[i]); i++) {
        if (nd == 0 && s[i] == '0') continue; /* leading zero */
        digits[nd++] = (char)s[i];
        point++;
    }
    if (i < n && s[i] == '.') {
        for (i++; i < n && is_digit(s[i]); i++) {
            if (nd == 0 && s[i] == '0') point--;
            else digits[nd++] = (char)s[i];
        }
    }
    if (i < n) { /* exponent */
        i++;
        int sign = 1, exponent = 0;
        if (s[i] == '+' || s[i] == '-') sign = s[i++] == '-' ? -1 : 1;
        for (; i < n; i++)
            if (exponent < 100000) exponent = exponent * 10 + (s[i] - '0');
        point += sign * exponent;
    }
    while (nd > 0 && digits[nd - 1] == '0') nd--;
    if (nd == 0) { /* zero, keeping the sign as Go does: -0 */
        put_decimal(o, negative, digits, 0, 0);
        return OK;
    }
    if (point > MAX_POINT || point < -MAX_POINT) return GIVE_UP;
    /* Up to 15 significant digits in the normal range, a decimal is the shortest text of the
     * float nearest to it (DBL_DIG): no two such decimals share a float. */
    if (nd <= 15 && point >= -306 && point <= 308) {
        put_decimal(o, negative, digits, nd, point);
        return OK;
    }
    uint64_t m = 0;
    for (int k = 0; k < nd && k < 19; k++) m = m * 10 + (uint64_t)(digits[k] - '0');
    int e = point - nd; /* the literal is m×10^e when nd <= 19 */
    double x;
    if (nd > 19 || !nearest_float(m, e, &x)) {
        char text[MAX_LITERAL + 1];
        memcpy(text, s + negative, n - (size_t)negative);
        text[n - (size_t)negative] = 0;
        x = strtod(text, NULL);
    }
    if (!isfinite(x) || x < DBL_MIN) return GIVE_UP; /* overflow, subnormal or underflow */
    if (nd <= 17) {
        /* The literal reads back as x. The shortest text has fewer digits only if a decimal
         * with one digit less reads back too, and then so does one of the two next to the
         * literal (the floats' rounding interval is an interval). */
        Binary b;
        binary_of(x, &b);
        if (EXACT(&b, e)) {
            int shorter = nd >= 2 && (inside(&b, m / 10, e + 1) || inside(&b, m / 10 + 1, e + 1));
            if (!shorter) { /* nd digits it is: the closest such decimal to x */
                u128 r = closest(&b, e);
                if (r == m) put_decimal(o, negative, digits, nd, point);
                else if (r < ((u128)1 << 60) && inside(&b, (uint64_t)r, e)) put_scaled(o, negative, r, e);
                else return GIVE_UP;
                return OK;
            }
        } else {
            int shorter = nd >= 2 && (reads_as(m / 10, e + 1, x) || reads_as(m / 10 + 1, e + 1, x));
            if (!shorter && !reads_as(m - 1, e, x) && !reads_as(m + 1, e, x)) {
                put_decimal(o, negative, digits, nd, point); /* the only candidate of its length */
                return OK;
            }
        }
    }
    /* Otherwise the closest decimal of the fewest digits (15, 16 or 17) that reads back. Below 16
     * digits it is unique; at 16 and 17 the closest one reads back whenever any does, except at a
     * power of two, where the interval is lopsided: leave those to the Python path. */
    int exp2;
    if (frexp(x, &exp2) == 0.5) return GIVE_UP;
    char buf[40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(buf, sizeof buf, "%.*e", precision - 1, x);
        if (precision < 17 && strtod(buf, NULL) != x) continue;
        char *mark = strchr(buf, 'e');
        int count = 0;
        for (char *c = buf; c < mark; c++)
            if (*c != '.') digits[count++] = *c;
        while (count > 0 && digits[count - 1] == '0') count--;
        put_decimal(o, negative, digits, count, atoi(mark + 1) + 1);
        return OK;
    }
    return GIVE_UP;
}

/* -- one line: a flat object of known scalar fields ----------------------------------------- */

enum { F_TIME, F_UUID, F_ID, F_ACTIVE, F_EMAIL, F_PHONE, F_DESCRIPTION, F_CREDITS, F_UNKNOWN };

/* The fields, matched with their key's closing quote in one comparison; *pp moves past it. Any
 * other key (one with escapes is left to the Python path) is F_UNKNOWN. */
static int known_key(Ptr *pp, Ptr e) {
    static const struct { const char *text; size_t n; int field; } KEYS[] = {
        {"time\"", 5, F_TIME}, {"uuid\"", 5, F_UUID}, {"id\"", 3, F_ID}, {"active\"", 7, F_ACTIVE},
        {"email\"", 6, F_EMAIL}, {"phone\"", 6, F_PHONE}, {"description\"", 12, F_DESCRIPTION},
        {"credits\"", 8, F_CREDITS},
    };
    for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++) {
        if ((size_t)(e - *pp) >= KEYS[i].n && **pp == KEYS[i].text[0] && memcmp(*pp, KEYS[i].text, KEYS[i].n) == 0) {
            *pp += KEYS[i].n;
            return KEYS[i].field;
        }
    }
    return F_UNKNOWN;
}

typedef struct {
    Text time, uuid, email, phone, description;
    Ptr id, credits; /* the number literal, or NULL */
    size_t id_n, credits_n;
    int active;
} Line;

/* A string or null into t. */
static int string_or_null(Ptr *pp, Ptr e, Text *t) {
    if (*pp < e && **pp == '"') {
        ++*pp;
        return scan_string(pp, e, t);
    }
    t->p = NULL;
    return literal(pp, e, "null", 4) ? OK : GIVE_UP;
}

/* A number (an integer if asked) or null. */
static int number_or_null(Ptr *pp, Ptr e, int want_integer, Ptr *start, size_t *n) {
    *start = NULL;
    if (literal(pp, e, "null", 4)) return OK;
    int integer;
    Ptr end = scan_number(*pp, e, &integer);
    if (end == NULL || (want_integer && !integer)) return GIVE_UP;
    *start = *pp;
    *n = (size_t)(end - *pp);
    *pp = end;
    return OK;
}

static int skip_value(Ptr *pp, Ptr e, Buf *scratch) {
    Text t;
    if (*pp < e && **pp == '"') {
        ++*pp;
        if (scan_string(pp, e, &t) != OK) return GIVE_UP;
        return t.escaped ? unescape(&t, scratch) : OK; /* a bad escape is a 400 even here */
    }
    if (literal(pp, e, "true", 4) || literal(pp, e, "false", 5) || literal(pp, e, "null", 4)) return OK;
    int integer;
    Ptr end = scan_number(*pp, e, &integer);
    if (end == NULL) return GIVE_UP; /* objects and arrays too: rare enough for the Python path */
    *pp = end;
    return OK;
}

static int parse_line(Ptr p, Ptr e, Line *line, Buf *scratch) {
    line->uuid.p = line->email.p = line->phone.p = line->description.p = line->id = line->credits = NULL;
    line->active = 0;
    unsigned seen = 0;
    if (*p++ != '{') return GIVE_UP;
    p = skip_ws(p, e);
    if (p < e && *p == '}') return GIVE_UP; /* no time */
    for (;;) {
        if (p >= e || *p++ != '"') return GIVE_UP;
        int field = known_key(&p, e);
        if (field == F_UNKNOWN) { /* an unknown key, skipped with its value */
            Text key;
            if (scan_string(&p, e, &key) != OK || key.escaped) return GIVE_UP;
        }
        p = skip_ws(p, e);
        if (p >= e || *p++ != ':') return GIVE_UP;
        p = skip_ws(p, e);
        if (field != F_UNKNOWN) {
            if (seen & (1u << field)) return GIVE_UP; /* a duplicate key */
            seen |= 1u << field;
        }
        int rc;
        switch (field) {
        case F_TIME:
            rc = p < e && *p == '"' ? (++p, scan_string(&p, e, &line->time)) : GIVE_UP;
            if (rc == OK && line->time.escaped) rc = GIVE_UP;
            break;
        case F_UUID: rc = string_or_null(&p, e, &line->uuid); break;
        case F_EMAIL: rc = string_or_null(&p, e, &line->email); break;
        case F_PHONE: rc = string_or_null(&p, e, &line->phone); break;
        case F_DESCRIPTION: rc = string_or_null(&p, e, &line->description); break;
        case F_ID: rc = number_or_null(&p, e, 1, &line->id, &line->id_n); break;
        case F_CREDITS: rc = number_or_null(&p, e, 0, &line->credits, &line->credits_n); break;
        case F_ACTIVE:
            if (literal(&p, e, "true", 4)) line->active = 1, rc = OK;
            else rc = literal(&p, e, "false", 5) || literal(&p, e, "null", 4) ? OK : GIVE_UP;
            break;
        default: rc = skip_value(&p, e, scratch);
        }
        if (rc != OK) return rc;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}') break;
        return GIVE_UP;
    }
    if (skip_ws(p + 1, e) != e) return GIVE_UP; /* something after the object */
    return seen & (1u << F_TIME) ? OK : GIVE_UP;
}

/* An int64 literal, as the Python path renders it. */
static int put_id(Buf *o, Ptr s, size_t n) {
    if (s == NULL || (n == 2 && s[0] == '-' && s[1] == '0')) {
        put1(o, '0');
        return OK;
    }
    size_t digits = n - (s[0] == '-');
    if (digits > 19) return GIVE_UP;
    if (digits == 19) {
        const char *limit = s[0] == '-' ? "9223372036854775808" : "9223372036854775807";
        if (memcmp(s + (s[0] == '-'), limit, 19) > 0) return GIVE_UP;
    }
    put(o, s, n);
    return OK;
}

static int put_row(Buf *o, const Line *l, Buf *scratch, int64_t *ns) {
    int rc;
    if ((rc = put_time(o, l->time.p, l->time.n, ns)) != OK) return rc;
    put1(o, ',');
    if ((rc = put_text(o, &l->uuid, scratch)) != OK) return rc;
    put1(o, ',');
    if ((rc = put_id(o, l->id, l->id_n)) != OK) return rc;
    put1(o, ',');
    if (l->active) put(o, "true", 4);
    else put(o, "false", 5);
    put1(o, ',');
    if ((rc = put_text(o, &l->email, scratch)) != OK) return rc;
    put1(o, ',');
    if ((rc = put_text(o, &l->phone, scratch)) != OK) return rc;
    put1(o, ',');
    if ((rc = put_text(o, &l->description, scratch)) != OK) return rc;
    put1(o, ',');
    if (l->credits == NULL) put1(o, '0');
    else if ((rc = put_credits(o, l->credits, l->credits_n)) != OK) return rc;
    put1(o, '\n');
    return OK;
}

typedef struct {
    Buf csv, times, ends, scratch;
    size_t stop; /* where the pass stopped: the body's length, or the start of a line it left */
} Output;

static int run(Output *out, Ptr body, size_t len, size_t max_line) {
    Ptr end = body + len;
    for (Ptr start = body; start < end;) {
        out->stop = (size_t)(start - body);
        Ptr nl = memchr(start, '\n', (size_t)(end - start));
        Ptr stop = nl ? nl : end;
        size_t n = (size_t)(stop - start);
        if (n > max_line) return GIVE_UP;
        Ptr p = skip_ws(start, stop);
        if (p < stop) {
            Line line;
            int rc = parse_line(p, stop, &line, &out->scratch);
            if (rc != OK) return rc;
            if (reserve(&out->csv, FIELD_ROOM(n) + CREDITS_ROOM + 64) != OK ||
                reserve(&out->times, 8) != OK || reserve(&out->ends, 8) != OK)
                return NO_MEMORY;
            size_t row_start = out->csv.len;
            int64_t ns;
            if ((rc = put_row(&out->csv, &line, &out->scratch, &ns)) != OK) {
                out->csv.len = row_start; /* no half row */
                return rc;
            }
            int64_t offset = (int64_t)out->csv.len;
            put(&out->times, &ns, 8);
            put(&out->ends, &offset, 8);
        }
        start = stop + 1;
    }
    out->stop = len;
    return OK;
}

/* -- a read-only buffer object that owns malloc'ed memory ----------------------------------- */

typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t len;
} Block;

static int block_getbuffer(PyObject *self, Py_buffer *view, int flags) {
    Block *b = (Block *)self;
    return PyBuffer_FillInfo(view, self, b->p ? b->p : "", b->len, 1, flags);
}

static void block_dealloc(PyObject *self) {
    free(((Block *)self)->p);
    Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t block_length(PyObject *self) { return ((Block *)self)->len; }

static PyBufferProcs block_as_buffer = {block_getbuffer, NULL};
static PySequenceMethods block_as_sequence = {.sq_length = block_length};

static PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "batched_event_api._native.Block",
    .tp_basicsize = sizeof(Block),
    .tp_dealloc = block_dealloc,
    .tp_as_buffer = &block_as_buffer,
    .tp_as_sequence = &block_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes produced by transcode(), exposed through the buffer protocol.",
};

static PyObject *block_from(Buf *b) {
    Block *block = PyObject_New(Block, &BlockType);
    if (block == NULL) return NULL;
    block->p = b->p;
    block->len = (Py_ssize_t)b->len;
    b->p = NULL;
    return (PyObject *)block;
}

static locale_t c_locale;

static PyObject *transcode(PyObject *self, PyObject *args) {
    Py_buffer body;
    Py_ssize_t max_line;
    if (!PyArg_ParseTuple(args, "y*n", &body, &max_line)) return NULL;
    Output out;
    memset(&out, 0, sizeof out);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    locale_t previous = uselocale(c_locale); /* strtod and snprintf with '.' whatever the process locale */
    rc = run(&out, body.buf, (size_t)body.len, (size_t)max_line);
    uselocale(previous);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    free(out.scratch.p);
    PyObject *result = NULL;
    if (rc == NO_MEMORY) {
        PyErr_NoMemory();
    } else {
        PyObject *csv = block_from(&out.csv), *times = block_from(&out.times), *ends = block_from(&out.ends);
        PyObject *stop = PyLong_FromSize_t(out.stop);
        if (csv && times && ends && stop) result = PyTuple_Pack(4, csv, times, ends, stop);
        Py_XDECREF(csv);
        Py_XDECREF(times);
        Py_XDECREF(ends);
        Py_XDECREF(stop);
    }
    free(out.csv.p);
    free(out.times.p);
    free(out.ends.p);
    return result;
}

/* scan_window(times, first, start, bound) -> (stop, late): the window policy's inner loop (the
   plain reference is windows.scan_window). From index `first` of an int64 buffer: the index of
   the first time at or past `bound`, and how many times before it are earlier than `start`.
   `bound` may lie beyond int64 (start + interval), then no time reaches it. */
static PyObject *scan_window(PyObject *self, PyObject *args) {
    Py_buffer times;
    Py_ssize_t first;
    long long start;
    PyObject *bound_obj;
    if (!PyArg_ParseTuple(args, "y*nLO", &times, &first, &start, &bound_obj)) return NULL;
    int overflow = 0;
    long long bound = PyLong_AsLongLongAndOverflow(bound_obj, &overflow);
    if (bound == -1 && PyErr_Occurred()) {
        PyBuffer_Release(&times);
        return NULL;
    }
    const char *p = times.buf;
    Py_ssize_t n = times.len / 8, i = first < 0 ? 0 : first > n ? n : first, late = 0;
    for (; i < n; i++) {
        int64_t t;
        memcpy(&t, p + 8 * i, 8);
        if (overflow < 0 || (overflow == 0 && t >= bound)) break;
        late += t < start;
    }
    PyBuffer_Release(&times);
    return Py_BuildValue("nn", i, late);
}

static PyMethodDef methods[] = {
    {"scan_window", scan_window, METH_VARARGS,
     "scan_window(times, first, start, bound) -> (stop, late): the first index at or past bound, and the times before it earlier than start."},
    {"transcode", transcode, METH_VARARGS,
     "transcode(body, max_line) -> (csv, times, ends, stop): the rows of the lines before `stop`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_native", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (c_locale == (locale_t)0) return PyErr_NoMemory();
    if (PyType_Ready(&BlockType) < 0) return NULL;
    init_special();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    PyObject *earliest = PyLong_FromLongLong(EARLIEST_NS), *latest = PyLong_FromLongLong(LATEST_NS);
    int failed = earliest == NULL || latest == NULL || PyModule_AddObjectRef(m, "EARLIEST_NS", earliest) < 0 ||
                 PyModule_AddObjectRef(m, "LATEST_NS", latest) < 0;
    Py_XDECREF(earliest);
    Py_XDECREF(latest);
    if (failed) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
