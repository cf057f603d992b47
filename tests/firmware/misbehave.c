/* A VCU-role firmware that misbehaves on purpose at a configured time (tests of the slot's failure paths).
 * config: "<what>_at_ms=<t>" with what = crash | hang | error | nan | range | garbage_tx; "abi=<n>" reports
 * another ABI version; "globals=1" keeps its tick counter in a global (two instances then interfere). */
#include "bms_fil.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long shared_ticks;   /* used only with globals=1 */

typedef struct fw { long ticks; int globals; char what[16]; double at_ns, t_ns; char error[64]; } fw;

static int create(const bms_fil_setup *setup, void **instance, char *error, size_t size) {
    (void)setup; (void)error; (void)size;
    fw *f = calloc(1, sizeof *f);
    const char *p = strstr(setup->config, "_at_ms=");
    if (p) {
        size_t n = (size_t)(p - setup->config) < sizeof f->what - 1 ? (size_t)(p - setup->config) : sizeof f->what - 1;
        memcpy(f->what, setup->config, n);
        f->at_ns = atof(p + 7) * 1e6;
    }
    f->globals = strstr(setup->config, "globals=1") != NULL;
    *instance = f;
    return BMS_FIL_OK;
}

static int step(void *instance, int64_t t_ns, int64_t dt_ns, const double *in, double *out) {
    fw *f = instance;
    (void)dt_ns;
    long *ticks = f->globals ? &shared_ticks : &f->ticks;
    *ticks += 1;
    f->t_ns = (double)t_ns;
    out[0] = f->globals ? (double)(*ticks % 7) : 0.0 * in[0];
    if (f->what[0] && (double)t_ns >= f->at_ns) {
        if (!strcmp(f->what, "crash")) raise(SIGSEGV);
        if (!strcmp(f->what, "hang")) for (;;) pause();
        if (!strcmp(f->what, "error")) { snprintf(f->error, sizeof f->error, "sensor table corrupt"); return BMS_FIL_ERROR; }
        if (!strcmp(f->what, "nan")) out[0] = NAN;
        if (!strcmp(f->what, "range")) out[0] = 1e6;
    }
    return BMS_FIL_OK;
}

static int transmit(void *instance, bms_fil_frame *frames, uint32_t capacity, uint32_t *count) {
    fw *f = instance;
    *count = 0;
    if (!strcmp(f->what, "garbage_tx") && f->t_ns >= f->at_ns) {
        memset(frames, 0, sizeof *frames);
        frames[0].id = 0x7FF;
        frames[0].len = 77;  /* not a CAN frame */
        *count = capacity ? 1 : 0;
    }
    return BMS_FIL_OK;
}

static const char *last_error(void *instance) { return ((fw *)instance)->error; }
static void destroy(void *instance) { free(instance); }

static bms_fil_api API = {
    .abi_version = BMS_FIL_ABI_VERSION, .roles = (1u << BMS_FIL_ROLE_VCU) | (1u << BMS_FIL_ROLE_BMS),
    .name = "misbehave", .version = "0.0.1", .create = create, .step = step, .transmit = transmit,
    .last_error = last_error, .destroy = destroy,
};

BMS_FIL_EXPORT const bms_fil_api *bms_fil_get_api(uint32_t host_abi_version) {
    (void)host_abi_version;
    const char *abi = getenv("MISBEHAVE_ABI");
    if (abi) API.abi_version = (uint32_t)atoi(abi);
    if (getenv("MISBEHAVE_DECLARE_GLOBALS")) API.flags = BMS_FIL_FLAG_GLOBALS;
    return &API;
}
