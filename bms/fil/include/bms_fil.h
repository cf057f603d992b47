/* bms_fil.h - the firmware slot of the assb-bms-emulator as a C ABI.
 *
 * A firmware (a BMS, or a VCU / charger controller) built for the host implements the functions of
 * bms_fil_api and exports one symbol, bms_fil_get_api. The emulator steps it in virtual time:
 *
 *     per tick:  receive(frames that arrived)  ->  step(t_ns, dt_ns, inputs, outputs)  ->  transmit(frames)
 *
 * Everything a firmware sees or does is in `inputs`, `outputs` and the frames; it never reads the plant.
 * All state lives in the instance (no globals): two instances in one process must not interfere. A library
 * that cannot avoid globals sets BMS_FIL_FLAG_GLOBALS and is run in its own process (process transport).
 *
 * The same firmware source runs in-process (built as a shared library), in its own process (linked with
 * bms_fil_process.c into an executable) or inside an FMU (see examples/firmware/).
 * `bms-emu firmware header -o bms_fil.h` writes this file.
 */
#ifndef BMS_FIL_H
#define BMS_FIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this ABI. The host refuses a library whose api->abi_version differs, before the first tick. */
#define BMS_FIL_ABI_VERSION 1u

#if defined(_WIN32)
#define BMS_FIL_EXPORT __declspec(dllexport)
#else
#define BMS_FIL_EXPORT __attribute__((visibility("default")))
#endif

/* --- return codes: 0 is success; any other value stops the run with last_error()'s message ----------- */
enum {
    BMS_FIL_OK = 0,
    BMS_FIL_ERROR = 1,           /* any failure; last_error() says what */
    BMS_FIL_BAD_CONFIG = 2,      /* create(): the configuration string or the layout is not acceptable */
    BMS_FIL_BAD_STATE = 3,       /* restore_state(): not a state this firmware saved */
    BMS_FIL_NO_SPACE = 4,        /* a buffer given by the host is too small */
    BMS_FIL_UNSUPPORTED = 5      /* e.g. save/restore not implemented */
};

/* --- roles ------------------------------------------------------------------------------------------ */
enum {
    BMS_FIL_ROLE_BMS = 1,        /* sees the pack's sensors, commands contactors and balancing */
    BMS_FIL_ROLE_VCU = 2         /* sees the drive's demand and the charger's offer, sets the load current */
};

/* --- api flags ---------------------------------------------------------------------------------------- */
#define BMS_FIL_FLAG_GLOBALS 0x1u   /* the library keeps state outside its instances: one per process */

/* --- BMS role: inputs[] (the sensor layer's channel order; every value is the channel's latest sample) --
 * nc = setup->n_cells (cell-monitor channels, one per series group, 0 = the group at the pack's negative
 * end), nt = setup->n_temperatures (surface sensors, module by module).                                  */
#define BMS_IN_CELL_V(i)              (i)                       /* V, cell-monitor channel i            */
#define BMS_IN_TEMP_C(nc, i)          ((nc) + (i))              /* degC, temperature channel i          */
#define BMS_IN_CURRENT_A(nc, nt)      ((nc) + (nt))             /* A, shunt, > 0 discharging            */
#define BMS_IN_PACK_V(nc, nt)         ((nc) + (nt) + 1)         /* V, string voltage, pack side         */
#define BMS_IN_LINK_V(nc, nt)         ((nc) + (nt) + 2)         /* V, DC link, load side                */
#define BMS_IN_FEEDBACK(nc, nt, k)    ((nc) + (nt) + 3 + (k))   /* 1 closed / 0 open, contactor k       */
#define BMS_N_INPUTS(nc, nt)          ((nc) + (nt) + 6)

/* BMS role: outputs[] (the host set them all to 0 before the first step; they hold until changed)       */
#define BMS_OUT_CONTACTOR(k)          (k)                       /* 1 close / 0 open, contactor k        */
#define BMS_OUT_BALANCE(i)            (3 + (i))                 /* 1 bleed / 0 off, group i             */
#define BMS_N_OUTPUTS(nc)             (3 + (nc))

/* contactor index k */
#define BMS_MAIN_POSITIVE 0
#define BMS_MAIN_NEGATIVE 1
#define BMS_PRECHARGE     2

/* --- VCU role: inputs[] --------------------------------------------------------------------------------- */
#define VCU_IN_DEMAND_MODE            0   /* 0 rest, 1 power, 2 current, 3 charge                            */
#define VCU_IN_DEMAND_VALUE           1   /* W (power) or A (current), > 0 discharging; charge: 0            */
#define VCU_IN_LINK_V                 2   /* V, the inverter's own DC-link measurement                       */
#define VCU_IN_SPEED_MPS              3   /* m/s, vehicle speed                                              */
#define VCU_IN_CHARGER_MAX_V          4   /* V, the charger's offer (0: no charger connected)                */
#define VCU_IN_CHARGER_MAX_A          5   /* A, the charger's offer                                          */
#define VCU_N_INPUTS                  6
/* VCU role: outputs[] */
#define VCU_OUT_LOAD_CURRENT_A        0   /* A, what the inverter draws (> 0) or the charger feeds (< 0)      */
#define VCU_N_OUTPUTS                 1

enum { VCU_DEMAND_REST = 0, VCU_DEMAND_POWER = 1, VCU_DEMAND_CURRENT = 2, VCU_DEMAND_CHARGE = 3 };

/* --- CAN frames ------------------------------------------------------------------------------------------ */
#define BMS_FIL_FRAME_EXTENDED 0x1u   /* 29-bit identifier */
#define BMS_FIL_FRAME_FD       0x2u   /* CAN FD frame (up to 64 bytes) */
#define BMS_FIL_FRAME_BRS      0x4u   /* CAN FD bit-rate switch */

typedef struct bms_fil_frame {
    int64_t t_ns;        /* received: virtual time it was received; sent: ignored (the host stamps it)  */
    uint32_t id;         /* 11- or 29-bit identifier                                                      */
    uint8_t len;         /* data bytes: 0..8 (classical), 0..64 (FD)                                      */
    uint8_t flags;       /* BMS_FIL_FRAME_*                                                               */
    uint8_t reserved[2];
    uint8_t data[64];
} bms_fil_frame;         /* 80 bytes */

/* --- what the host tells create() ----------------------------------------------------------------------- */
typedef struct bms_fil_setup {
    uint32_t abi_version;     /* BMS_FIL_ABI_VERSION of the host */
    uint32_t role;            /* BMS_FIL_ROLE_* */
    uint32_t n_cells;         /* BMS role: cell-monitor channels (series groups); VCU role: 0 */
    uint32_t n_temperatures;  /* BMS role: temperature channels; VCU role: 0 */
    uint32_t n_inputs;        /* length of inputs[] */
    uint32_t n_outputs;       /* length of outputs[] */
    uint32_t max_frames;      /* receive() gets at most, transmit() may return at most, this many per tick */
    uint32_t reserved;
    int64_t dt_ns;            /* nominal tick */
    const char *config;       /* the scenario's [firmware] config string (UTF-8, never NULL) */
} bms_fil_setup;

/* --- the functions a firmware implements ------------------------------------------------------------------ */
typedef struct bms_fil_api {
    uint32_t abi_version;      /* BMS_FIL_ABI_VERSION the library was built with */
    uint32_t flags;            /* BMS_FIL_FLAG_* */
    uint32_t roles;            /* bit mask: 1 << BMS_FIL_ROLE_BMS, 1 << BMS_FIL_ROLE_VCU */
    uint32_t reserved;
    const char *name;          /* e.g. "acme-bms" */
    const char *version;       /* e.g. "1.4.2+g3af9c1" (named in every report) */

    /* A new instance in *instance. On failure return a code and write a message into error[error_size]. */
    int (*create)(const bms_fil_setup *setup, void **instance, char *error, size_t error_size);
    /* Back to the state right after create(). */
    int (*reset)(void *instance);
    /* One tick at virtual time t_ns (the sample instant of inputs[]); outputs[] then hold for dt_ns. */
    int (*step)(void *instance, int64_t t_ns, int64_t dt_ns, const double *inputs, double *outputs);
    /* Frames received since the last step (count <= max_frames), called before step(). */
    int (*receive)(void *instance, const bms_fil_frame *frames, uint32_t count);
    /* Frames to send after step(): write up to capacity frames, set *count. */
    int (*transmit)(void *instance, bms_fil_frame *frames, uint32_t capacity, uint32_t *count);
    /* Saved state: its size in bytes (0: save/restore unsupported), save into / restore from a buffer. */
    size_t (*state_size)(void *instance);
    int (*save_state)(void *instance, void *buffer, size_t size);
    int (*restore_state)(void *instance, const void *buffer, size_t size);
    /* The message of the last failing call of this instance (never NULL). */
    const char *(*last_error)(void *instance);
    void (*destroy)(void *instance);
} bms_fil_api;

/* The one symbol a library exports. host_abi_version: the host's BMS_FIL_ABI_VERSION. */
typedef const bms_fil_api *(*bms_fil_get_api_fn)(uint32_t host_abi_version);
BMS_FIL_EXPORT const bms_fil_api *bms_fil_get_api(uint32_t host_abi_version);

/* --- process transport: the shared-memory block (see bms_fil_process.c) ------------------------------------
 * The host creates the block and two pipes and starts the firmware process with the environment variables
 * BMS_FIL_SHM_FD, BMS_FIL_CMD_FD and BMS_FIL_REPLY_FD (inherited file descriptors). For each command the
 * host fills the block, writes one byte (the command) to CMD; the firmware does it and writes one byte (its
 * return code) to REPLY after setting reply_sequence = sequence. A firmware in any language may speak this. */
#define BMS_FIL_SHM_MAGIC 0x4C494642u   /* "BFIL" */

enum {
    BMS_FIL_CMD_CREATE = 1,     /* setup fields and config are filled in; firmware fills name, version, state_size */
    BMS_FIL_CMD_STEP = 2,       /* rx frames, t_ns, dt_ns, inputs -> outputs, tx frames (receive, step, transmit) */
    BMS_FIL_CMD_RESET = 3,
    BMS_FIL_CMD_SAVE = 4,       /* state -> state area, state_used */
    BMS_FIL_CMD_RESTORE = 5,    /* state area (state_used bytes) -> state */
    BMS_FIL_CMD_QUIT = 6        /* destroy and exit(0) */
};

typedef struct bms_fil_shm {
    uint32_t magic;             /* BMS_FIL_SHM_MAGIC */
    uint32_t abi_version;       /* BMS_FIL_ABI_VERSION */
    uint64_t sequence;          /* host: +1 per command */
    uint64_t reply_sequence;    /* firmware: = sequence when its reply is ready */
    bms_fil_setup setup;        /* config is not valid across processes: see config_offset */
    int64_t t_ns, dt_ns;        /* STEP */
    uint32_t rx_count;          /* STEP: frames in the rx area */
    uint32_t tx_count;          /* STEP reply: frames in the tx area */
    uint64_t state_size;        /* CREATE reply: bytes save needs (0: unsupported) */
    uint64_t state_used;        /* SAVE reply / RESTORE: bytes in the state area */
    uint64_t total_size;        /* bytes of the whole block */
    uint64_t config_offset, inputs_offset, outputs_offset, rx_offset, tx_offset, state_offset;
    uint64_t state_capacity;
    char name[64];              /* CREATE reply */
    char version[64];           /* CREATE reply */
    char error[512];            /* any reply with a code != 0 */
} bms_fil_shm;

#ifdef __cplusplus
}
#endif
#endif /* BMS_FIL_H */
