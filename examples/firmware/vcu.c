/* vcu.c - a small VCU firmware for the emulator's firmware slot (VCU role).
 *
 * It asks the BMS for DRIVE (or CHARGE while a charger offers), waits for the BMS to precharge and report
 * READY, and draws what the driver asks for, clamped to the limits the BMS publishes. After a BMS fault it
 * sends STANDBY once before asking again. Frames follow the emulator's DBC (bms-emu dbc): VCU_Command and
 * CHG_Status every 10 ms with alive counter and CRC-8 SAE J1850; BMS_Status and BMS_Limits are read.
 *
 * Build: cc -O2 -shared -fPIC -I INCLUDE vcu.c -o libvcu.so            (kind = "library")
 *        cc -O2 -I INCLUDE vcu.c bms_fil_process.c -o vcu               (kind = "process")
 * INCLUDE: the folder of bms_fil.h (bms-emu firmware header -o bms_fil.h).
 */
#include "bms_fil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BMS_STATUS 0x100
#define ID_BMS_LIMITS 0x120
#define ID_BMS_TEMPERATURES 0x140
#define ID_VCU_COMMAND 0x200
#define ID_CHG_STATUS 0x210
#define STATE_READY 3
#define STATE_CHARGING 4
#define STATE_FAULT 5
#define REQ_STANDBY 1
#define REQ_DRIVE 2
#define REQ_CHARGE 3
#define CONTACTOR_OPEN 1
#define CONTACTOR_CLOSE 2

typedef struct vcu {
    int64_t period_ns, next_ns;
    unsigned bms_state;               /* from BMS_Status */
    double discharge_limit_A, charge_limit_A;  /* from BMS_Limits */
    double temp_min_C;                /* from BMS_TemperatureStats */
    unsigned counter_cmd, counter_chg;
    int rearm;                        /* send STANDBY once after a fault */
    bms_fil_frame tx[2];
    uint32_t n_tx;
    char error[128];
} vcu;

/* CRC-8 SAE J1850 (poly 0x1D, init 0xFF, xor-out 0xFF) over the data ID (low, high) and bytes 1..7 */
static uint8_t crc8(const uint8_t *data, unsigned n, uint16_t data_id) {
    uint8_t crc = 0xFF, head[2] = {(uint8_t)(data_id & 0xFF), (uint8_t)(data_id >> 8)};
    for (unsigned k = 0; k < n + 2; k++) {
        crc ^= k < 2 ? head[k] : data[k - 2];
        for (int b = 0; b < 8; b++) crc = (uint8_t)(crc & 0x80 ? (crc << 1) ^ 0x1D : crc << 1);
    }
    return crc ^ 0xFF;
}

static uint32_t bits(const uint8_t *d, unsigned start, unsigned length) { /* Intel byte order */
    uint64_t raw = 0;
    for (int k = 7; k >= 0; k--) raw = (raw << 8) | d[k];
    return (uint32_t)((raw >> start) & ((1ull << length) - 1));
}

static void put(uint8_t *d, unsigned start, unsigned length, uint32_t value) {
    for (unsigned b = 0; b < length; b++, start++)
        if (value >> b & 1) d[start / 8] |= (uint8_t)(1u << (start % 8));
}

static bms_fil_frame *frame(vcu *v, uint32_t id, unsigned *counter) {
    bms_fil_frame *f = &v->tx[v->n_tx++];
    memset(f, 0, sizeof *f);
    f->id = id;
    f->len = 8;
    put(f->data, 8, 4, *counter);
    *counter = (*counter + 1) % 16;
    return f;
}

static void seal(bms_fil_frame *f) { f->data[0] = crc8(f->data + 1, 7, (uint16_t)f->id); }

static int create(const bms_fil_setup *setup, void **instance, char *error, size_t size) {
    if (setup->role != BMS_FIL_ROLE_VCU || setup->n_inputs != VCU_N_INPUTS || setup->n_outputs != VCU_N_OUTPUTS) {
        snprintf(error, size, "vcu.c: expected the VCU role with %d inputs and %d outputs", VCU_N_INPUTS, VCU_N_OUTPUTS);
        return BMS_FIL_BAD_CONFIG;
    }
    vcu *v = calloc(1, sizeof *v);
    if (!v) return BMS_FIL_ERROR;
    v->period_ns = 10000000;  /* config "period_ms=20" changes it */
    const char *p = strstr(setup->config, "period_ms=");
    if (p) v->period_ns = (int64_t)(atof(p + 10) * 1e6);
    *instance = v;
    return BMS_FIL_OK;
}

static int reset(void *instance) {
    vcu *v = instance;
    int64_t period = v->period_ns;
    memset(v, 0, sizeof *v);
    v->period_ns = period;
    return BMS_FIL_OK;
}

static int receive(void *instance, const bms_fil_frame *frames, uint32_t count) {
    vcu *v = instance;
    for (uint32_t k = 0; k < count; k++) {
        const bms_fil_frame *f = &frames[k];
        if (f->len != 8 || (f->flags & BMS_FIL_FRAME_EXTENDED)) continue;
        if (f->id == ID_BMS_STATUS) v->bms_state = bits(f->data, 12, 4);
        if (f->id == ID_BMS_LIMITS) {
            v->discharge_limit_A = bits(f->data, 12, 13) * 0.25;
            v->charge_limit_A = bits(f->data, 25, 13) * 0.25;
        }
        if (f->id == ID_BMS_TEMPERATURES) v->temp_min_C = bits(f->data, 0, 10) * 0.25 - 50.0;
    }
    return BMS_FIL_OK;
}

static int step(void *instance, int64_t t_ns, int64_t dt_ns, const double *in, double *out) {
    vcu *v = instance;
    (void)dt_ns;
    int mode = (int)in[VCU_IN_DEMAND_MODE];
    v->n_tx = 0;
    if (t_ns >= v->next_ns) {  /* the 10 ms task: the command (and the charger's status while charging) */
        v->next_ns = t_ns + v->period_ns;
        unsigned request = mode == VCU_DEMAND_CHARGE ? REQ_CHARGE : REQ_DRIVE;
        if (v->rearm) request = REQ_STANDBY;
        v->rearm = v->bms_state == STATE_FAULT || (v->rearm && request != REQ_STANDBY);
        if (request == REQ_CHARGE) {
            bms_fil_frame *f = frame(v, ID_CHG_STATUS, &v->counter_chg);
            put(f->data, 12, 1, 1);
            put(f->data, 16, 16, (uint32_t)(in[VCU_IN_CHARGER_MAX_V] * 10 + 0.5));
            put(f->data, 32, 16, (uint32_t)(in[VCU_IN_CHARGER_MAX_A] * 10 + 0.5));
            seal(f);
        }
        bms_fil_frame *f = frame(v, ID_VCU_COMMAND, &v->counter_cmd);
        put(f->data, 12, 4, request);
        put(f->data, 16, 2, request == REQ_STANDBY ? CONTACTOR_OPEN : CONTACTOR_CLOSE);
        seal(f);
    }
    double asked = 0.0;  /* what the driver (or the charger) asks for, > 0 discharging */
    if (mode == VCU_DEMAND_POWER) {
        double link = in[VCU_IN_LINK_V] > 50.0 ? in[VCU_IN_LINK_V] : 50.0;
        asked = in[VCU_IN_DEMAND_VALUE] / link;
    } else if (mode == VCU_DEMAND_CURRENT) {
        asked = in[VCU_IN_DEMAND_VALUE];
    } else if (mode == VCU_DEMAND_CHARGE) {
        asked = -in[VCU_IN_CHARGER_MAX_A];
    }
    if (v->bms_state != STATE_READY && v->bms_state != STATE_CHARGING) asked = 0.0;
    if (asked > v->discharge_limit_A) asked = v->discharge_limit_A;
#ifdef VCU_SEEDED_BUG
    /* A deliberately seeded bug for the testing kit's example (examples/testing/): regeneration below 5 degC
     * ignores the charge limit. Build with -DVCU_SEEDED_BUG; a property test finds and shrinks it. */
    int regen_in_the_cold = mode == VCU_DEMAND_POWER && asked < 0.0 && v->temp_min_C < 5.0;
    if (asked < -v->charge_limit_A && !regen_in_the_cold) asked = -v->charge_limit_A;
#else
    if (asked < -v->charge_limit_A) asked = -v->charge_limit_A;
#endif
    out[VCU_OUT_LOAD_CURRENT_A] = asked;
    return BMS_FIL_OK;
}

static int transmit(void *instance, bms_fil_frame *frames, uint32_t capacity, uint32_t *count) {
    vcu *v = instance;
    *count = v->n_tx <= capacity ? v->n_tx : capacity;
    memcpy(frames, v->tx, *count * sizeof *frames);
    return BMS_FIL_OK;
}

static size_t state_size(void *instance) { (void)instance; return sizeof(vcu); }
static int save_state(void *instance, void *buffer, size_t size) {
    if (size < sizeof(vcu)) return BMS_FIL_NO_SPACE;
    memcpy(buffer, instance, sizeof(vcu));
    return BMS_FIL_OK;
}
static int restore_state(void *instance, const void *buffer, size_t size) {
    if (size != sizeof(vcu)) return BMS_FIL_BAD_STATE;
    memcpy(instance, buffer, sizeof(vcu));
    return BMS_FIL_OK;
}
static const char *last_error(void *instance) { return ((vcu *)instance)->error; }
static void destroy(void *instance) { free(instance); }

static const bms_fil_api API = {
    .abi_version = BMS_FIL_ABI_VERSION, .roles = 1u << BMS_FIL_ROLE_VCU, .name = "example-vcu", .version = "1.0.0",
    .create = create, .reset = reset, .step = step, .receive = receive, .transmit = transmit,
    .state_size = state_size, .save_state = save_state, .restore_state = restore_state,
    .last_error = last_error, .destroy = destroy,
};

BMS_FIL_EXPORT const bms_fil_api *bms_fil_get_api(uint32_t host_abi_version) {
    return host_abi_version == BMS_FIL_ABI_VERSION ? &API : NULL;
}
