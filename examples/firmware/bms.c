/* bms.c - a small BMS firmware for the emulator's firmware slot (BMS role).
 *
 * What it does, tick by tick (inputs: the pack's cell-monitor, temperature, shunt, voltage and contactor
 * feedback channels; outputs: the three contactors and the bleed switches):
 *   - protections with debounce: cell over-/under-voltage, over-temperature, an open cell-monitor wire
 *     (a channel reading below open_wire_V); a fault opens every contactor at once and stays latched;
 *   - the precharge sequence on the VCU's DRIVE or CHARGE request (VCU_Command of the emulator's DBC):
 *     main- closes, then the precharge relay; at 95 % of the pack voltage main+ closes and precharge opens;
 *   - a coulomb count (started from the open-circuit voltage) and limits derated near the voltage limits; no
 *     charging while the coldest temperature channel reads below charge_min_C (0 degC);
 *   - its own status frame, EXB_Status (example_bms.dbc), every 100 ms;
 *   - the VCU watchdog: no VCU_Command for vcu_timeout_ms while closed is a fault.
 * Configuration string (the scenario's [firmware] config): "ov_V=4.30 uv_V=2.60 ot_C=60 debounce_ms=100
 *   charge_min_C=0 capacity_Ah=120 ...".
 *
 * Build: cc -O2 -shared -fPIC -I INCLUDE bms.c -o libbms.so -lm           (kind = "library")
 *        cc -O2 -I INCLUDE bms.c bms_fil_process.c -o bms -lm             (kind = "process")
 */
#include "bms_fil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_INIT, ST_STANDBY, ST_PRECHARGE, ST_READY, ST_FAULT = 5 };
enum { F_NONE, F_OVERVOLTAGE, F_UNDERVOLTAGE, F_OVERTEMPERATURE, F_OPEN_WIRE, F_PRECHARGE, F_VCU_TIMEOUT };
enum { CHECK_OV, CHECK_UV, CHECK_OT, CHECK_OPEN, N_CHECKS };
#define ID_VCU_COMMAND 0x200
#define ID_STATUS 0x380

typedef struct cfg {
    double ov_V, uv_V, ot_C, open_wire_V, capacity_Ah, discharge_max_A, charge_max_A, charge_min_C;
    int64_t debounce_ns, vcu_timeout_ns, precharge_timeout_ns, status_period_ns;
} cfg;

typedef struct bms {
    cfg c;
    unsigned nc, nt;
    int state, fault, fault_channel, request, phase;
    int64_t debounce_since[N_CHECKS], phase_since, last_vcu_ns, next_status_ns;
    int pending[N_CHECKS], pending_channel[N_CHECKS];
    double soc;                 /* NAN until the first step */
    double discharge_limit_A, charge_limit_A;
    unsigned counter;
    bms_fil_frame tx;
    uint32_t n_tx;
    char error[160];
} bms;

static const double OCV_V[21] = {2.403, 3.072, 3.261, 3.389, 3.452, 3.496, 3.553, 3.595, 3.631, 3.669, 3.710,
                                 3.757, 3.808, 3.862, 3.922, 3.968, 4.021, 4.066, 4.085, 4.111, 4.209};

static double soc_from_ocv(double v) {
    if (v <= OCV_V[0]) return 0.0;
    for (int k = 1; k < 21; k++)
        if (v < OCV_V[k]) return (k - 1 + (v - OCV_V[k - 1]) / (OCV_V[k] - OCV_V[k - 1])) / 20.0;
    return 1.0;
}

static double option(const char *config, const char *key, double fallback) {
    const char *p = strstr(config, key);
    return p ? atof(p + strlen(key)) : fallback;
}

static void put(uint8_t *d, unsigned start, unsigned length, uint32_t value) { /* Intel byte order */
    for (unsigned b = 0; b < length; b++, start++)
        if (value >> b & 1) d[start / 8] |= (uint8_t)(1u << (start % 8));
}

static int create(const bms_fil_setup *setup, void **instance, char *error, size_t size) {
    if (setup->role != BMS_FIL_ROLE_BMS || setup->n_outputs != BMS_N_OUTPUTS(setup->n_cells)) {
        snprintf(error, size, "bms.c: expected the BMS role");
        return BMS_FIL_BAD_CONFIG;
    }
    bms *b = calloc(1, sizeof *b);
    if (!b) return BMS_FIL_ERROR;
    const char *s = setup->config;
    b->c = (cfg){option(s, "ov_V=", 4.30), option(s, "uv_V=", 2.60), option(s, "ot_C=", 60.0),
                 option(s, "open_wire_V=", 1.0), option(s, "capacity_Ah=", 120.0),
                 option(s, "discharge_max_A=", 480.0), option(s, "charge_max_A=", 120.0),
                 option(s, "charge_min_C=", 0.0),
                 (int64_t)(option(s, "debounce_ms=", 100.0) * 1e6), (int64_t)(option(s, "vcu_timeout_ms=", 200.0) * 1e6),
                 (int64_t)(option(s, "precharge_timeout_ms=", 2000.0) * 1e6), 100000000};
    b->nc = setup->n_cells;
    b->nt = setup->n_temperatures;
    b->soc = NAN;
    *instance = b;
    return BMS_FIL_OK;
}

static int reset(void *instance) {
    bms *b = instance;
    bms fresh = {.c = b->c, .nc = b->nc, .nt = b->nt, .soc = NAN};
    *b = fresh;
    return BMS_FIL_OK;
}

static int receive(void *instance, const bms_fil_frame *frames, uint32_t count) {
    bms *b = instance;
    for (uint32_t k = 0; k < count; k++) {
        const bms_fil_frame *f = &frames[k];
        if (f->id != ID_VCU_COMMAND || f->len != 8) continue;
        int request = f->data[1] >> 4, contactors = f->data[2] & 3;  /* StateRequest, ContactorRequest */
        b->request = (contactors == 1 && request >= 2) ? 1 : request;
        b->last_vcu_ns = f->t_ns;
    }
    return BMS_FIL_OK;
}

static void open_all(double *out) {
    out[BMS_OUT_CONTACTOR(BMS_MAIN_POSITIVE)] = out[BMS_OUT_CONTACTOR(BMS_PRECHARGE)] = 0.0;
    out[BMS_OUT_CONTACTOR(BMS_MAIN_NEGATIVE)] = 0.0;
}

static void trip(bms *b, int fault, int channel, double *out) {
    b->state = ST_FAULT;
    b->fault = fault;
    b->fault_channel = channel;
    open_all(out);
}

/* a condition that holds for debounce_ns trips the fault (the channel: the first one that was beyond) */
static int debounced(bms *b, int check, int active, int channel, int64_t t_ns) {
    if (!active) {
        b->pending[check] = 0;
        return 0;
    }
    if (!b->pending[check]) {
        b->pending[check] = 1;
        b->debounce_since[check] = t_ns;
        b->pending_channel[check] = channel;
    }
    return t_ns - b->debounce_since[check] >= b->c.debounce_ns;
}

static int step(void *instance, int64_t t_ns, int64_t dt_ns, const double *in, double *out) {
    bms *b = instance;
    const unsigned nc = b->nc, nt = b->nt;
    double v_min = 1e9, v_max = -1e9, v_sum = 0.0, t_max = -1e9, t_min = 1e9;
    int i_min = 0, i_max = 0, i_open = -1, i_hot = 0;
    for (unsigned i = 0; i < nc; i++) {
        double v = in[BMS_IN_CELL_V(i)];
        v_sum += v;
        if (v < v_min) { v_min = v; i_min = (int)i; }
        if (v > v_max) { v_max = v; i_max = (int)i; }
        if (v < b->c.open_wire_V && i_open < 0) i_open = (int)i;
    }
    for (unsigned i = 0; i < nt; i++) {
        if (in[BMS_IN_TEMP_C(nc, i)] > t_max) { t_max = in[BMS_IN_TEMP_C(nc, i)]; i_hot = (int)i; }
        if (in[BMS_IN_TEMP_C(nc, i)] < t_min) t_min = in[BMS_IN_TEMP_C(nc, i)];
    }
    double current = in[BMS_IN_CURRENT_A(nc, nt)], pack_V = in[BMS_IN_PACK_V(nc, nt)];
    double link_V = in[BMS_IN_LINK_V(nc, nt)];

    /* coulomb count, started from the open-circuit voltage of the mean cell */
    if (isnan(b->soc)) b->soc = soc_from_ocv(v_sum / nc);
    else b->soc -= current * (double)dt_ns * 1e-9 / 3600.0 / b->c.capacity_Ah;

    /* protections */
    if (b->state != ST_FAULT) {
        if (debounced(b, CHECK_OPEN, i_open >= 0, i_open, t_ns)) trip(b, F_OPEN_WIRE, b->pending_channel[CHECK_OPEN], out);
        else if (debounced(b, CHECK_OV, v_max > b->c.ov_V, i_max, t_ns)) trip(b, F_OVERVOLTAGE, b->pending_channel[CHECK_OV], out);
        else if (debounced(b, CHECK_UV, i_open < 0 && v_min < b->c.uv_V, i_min, t_ns))
            trip(b, F_UNDERVOLTAGE, b->pending_channel[CHECK_UV], out);
        else if (debounced(b, CHECK_OT, t_max > b->c.ot_C, i_hot, t_ns)) trip(b, F_OVERTEMPERATURE, b->pending_channel[CHECK_OT], out);
        else if ((b->state == ST_PRECHARGE || b->state == ST_READY) && t_ns - b->last_vcu_ns > b->c.vcu_timeout_ns)
            trip(b, F_VCU_TIMEOUT, 0, out);
    }

    /* state machine and the precharge sequence */
    int64_t in_phase = t_ns - b->phase_since;
    switch (b->state) {
    case ST_INIT:
        b->state = ST_STANDBY;
        break;
    case ST_STANDBY:
        if (b->request == 2 || b->request == 3) {
            b->state = ST_PRECHARGE;
            b->phase = 0;
            b->phase_since = t_ns;
            out[BMS_OUT_CONTACTOR(BMS_MAIN_NEGATIVE)] = 1.0;
        }
        break;
    case ST_PRECHARGE:
        if (b->request == 1 || b->request == 4) {
            open_all(out);
            b->state = ST_STANDBY;
        } else if (b->phase == 0 && in_phase >= 20000000) {        /* main- has closed: precharge relay */
            out[BMS_OUT_CONTACTOR(BMS_PRECHARGE)] = 1.0;
            b->phase = 1;
            b->phase_since = t_ns;
        } else if (b->phase == 1 && link_V >= 0.95 * pack_V && pack_V > 0 && in_phase >= 50000000) {
            out[BMS_OUT_CONTACTOR(BMS_MAIN_POSITIVE)] = 1.0;
            b->phase = 2;
            b->phase_since = t_ns;
        } else if (b->phase == 1 && in_phase >= b->c.precharge_timeout_ns) {
            trip(b, F_PRECHARGE, 0, out);
        } else if (b->phase == 2 && in_phase >= 20000000) {
            out[BMS_OUT_CONTACTOR(BMS_PRECHARGE)] = 0.0;
            b->state = ST_READY;
        }
        break;
    case ST_READY:
        if (b->request == 1 || b->request == 4) {
            open_all(out);
            b->state = ST_STANDBY;
        }
        break;
    default:
        break;
    }

    /* limits: full inside the window, derated to zero over the last 100 mV before a voltage limit */
    double dis = b->c.discharge_max_A * fmin(1.0, fmax(0.0, (v_min - b->c.uv_V) / 0.1));
    double chg = b->c.charge_max_A * fmin(1.0, fmax(0.0, (b->c.ov_V - 0.05 - v_max) / 0.1));
    if (t_min < b->c.charge_min_C) chg = 0.0;   /* no charging while any cell is below charge_min_C */
    b->discharge_limit_A = b->state == ST_READY ? dis : 0.0;
    b->charge_limit_A = b->state == ST_READY ? chg : 0.0;

    /* balancing at rest in STANDBY: bleed the groups more than 15 mV above the lowest */
    int rest = fabs(current) < 2.0 && b->state == ST_STANDBY;
    for (unsigned i = 0; i < nc; i++)
        out[BMS_OUT_BALANCE(i)] = rest && in[BMS_IN_CELL_V(i)] > v_min + 0.015 && i_open < 0 ? 1.0 : 0.0;

    /* the status frame every 100 ms (example_bms.dbc: EXB_Status) */
    b->n_tx = 0;
    if (t_ns >= b->next_status_ns) {
        b->next_status_ns = t_ns + b->c.status_period_ns;
        bms_fil_frame *f = &b->tx;
        memset(f, 0, sizeof *f);
        f->id = ID_STATUS;
        f->len = 8;
        double soc = fmin(1.0, fmax(0.0, b->soc));
        put(f->data, 0, 4, (uint32_t)b->state);
        put(f->data, 4, 4, (uint32_t)b->fault);
        put(f->data, 8, 8, (uint32_t)b->fault_channel);
        put(f->data, 16, 10, (uint32_t)(soc * 1000.0 + 0.5));
        put(f->data, 26, 11, (uint32_t)(b->discharge_limit_A + 0.5));
        put(f->data, 37, 11, (uint32_t)(b->charge_limit_A + 0.5));
        put(f->data, 48, 12, (uint32_t)(fmax(0.0, v_max) * 1000.0 + 0.5) >> 1);
        put(f->data, 60, 4, b->counter);
        b->counter = (b->counter + 1) % 16;
        b->n_tx = 1;
    }
    return BMS_FIL_OK;
}

static int transmit(void *instance, bms_fil_frame *frames, uint32_t capacity, uint32_t *count) {
    bms *b = instance;
    *count = b->n_tx && capacity ? 1 : 0;
    if (*count) frames[0] = b->tx;
    return BMS_FIL_OK;
}

static size_t state_size(void *instance) { (void)instance; return sizeof(bms); }
static int save_state(void *instance, void *buffer, size_t size) {
    if (size < sizeof(bms)) return BMS_FIL_NO_SPACE;
    memcpy(buffer, instance, sizeof(bms));
    return BMS_FIL_OK;
}
static int restore_state(void *instance, const void *buffer, size_t size) {
    if (size != sizeof(bms)) return BMS_FIL_BAD_STATE;
    memcpy(instance, buffer, sizeof(bms));
    return BMS_FIL_OK;
}
static const char *last_error(void *instance) { return ((bms *)instance)->error; }
static void destroy(void *instance) { free(instance); }

static const bms_fil_api API = {
    .abi_version = BMS_FIL_ABI_VERSION, .roles = 1u << BMS_FIL_ROLE_BMS, .name = "example-bms", .version = "1.0.0",
    .create = create, .reset = reset, .step = step, .receive = receive, .transmit = transmit,
    .state_size = state_size, .save_state = save_state, .restore_state = restore_state,
    .last_error = last_error, .destroy = destroy,
};

BMS_FIL_EXPORT const bms_fil_api *bms_fil_get_api(uint32_t host_abi_version) {
    return host_abi_version == BMS_FIL_ABI_VERSION ? &API : NULL;
}
