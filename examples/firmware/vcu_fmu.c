/* vcu_fmu.c - the example VCU (vcu.c) as an FMI 2.0 co-simulation FMU, CAN as DBC signals.
 *
 * The FMU's variables carry the slot's inputs and outputs by their contract names and the CAN signals by
 * "Message.Signal" of the emulator's DBC; the host decodes received frames into the input signals and
 * encodes (counter and CRC included) the messages whose "Message.send" output is 1 after a step.
 * The VCU logic is vcu.c itself: its received frames are rebuilt from the signals, its sent frames read back.
 * Build: python build_fmu.py OUT.fmu (uses the FMI headers fmpy ships).
 */
#include "vcu.c"

#include <math.h>

#include "fmi2Functions.h"

enum {  /* value references: modelDescription.xml in build_fmu.py */
    VR_MODE, VR_VALUE, VR_LINK_V, VR_SPEED, VR_CHARGER_V, VR_CHARGER_A, VR_DISCHARGE_LIMIT, VR_CHARGE_LIMIT,
    VR_BMS_STATE, VR_LOAD_CURRENT, VR_CHG_SEND, VR_CHG_CONNECTED, VR_CHG_MAX_V, VR_CHG_MAX_A, VR_CMD_SEND,
    VR_CMD_REQUEST, VR_CMD_CONTACTOR, N_VR
};

typedef struct component { vcu *v; double value[N_VR]; } component;

fmi2Component fmi2Instantiate(fmi2String name, fmi2Type type, fmi2String guid, fmi2String location,
                              const fmi2CallbackFunctions *functions, fmi2Boolean visible, fmi2Boolean logging) {
    (void)name; (void)guid; (void)location; (void)functions; (void)visible; (void)logging;
    if (type != fmi2CoSimulation) return NULL;
    bms_fil_setup setup = {.abi_version = BMS_FIL_ABI_VERSION, .role = BMS_FIL_ROLE_VCU, .n_inputs = VCU_N_INPUTS,
                           .n_outputs = VCU_N_OUTPUTS, .max_frames = 8, .dt_ns = 10000000, .config = ""};
    component *c = calloc(1, sizeof *c);
    char error[128];
    void *instance = NULL;
    if (!c || create(&setup, &instance, error, sizeof error) != BMS_FIL_OK) { free(c); return NULL; }
    c->v = instance;
    return c;
}

void fmi2FreeInstance(fmi2Component c) {
    if (!c) return;
    destroy(((component *)c)->v);
    free(c);
}

fmi2Status fmi2DoStep(fmi2Component comp, fmi2Real t, fmi2Real h, fmi2Boolean no_prior) {
    component *c = comp;
    vcu *v = c->v;
    (void)no_prior;
    /* the received signals, as vcu.c's receive() would have read them from BMS_Status and BMS_Limits */
    v->bms_state = (unsigned)c->value[VR_BMS_STATE];
    v->discharge_limit_A = c->value[VR_DISCHARGE_LIMIT];
    v->charge_limit_A = c->value[VR_CHARGE_LIMIT];
    double in[VCU_N_INPUTS], out[VCU_N_OUTPUTS];
    for (int k = 0; k < VCU_N_INPUTS; k++) in[k] = c->value[VR_MODE + k];
    int64_t t_ns = (int64_t)llround(t * 1e9), dt_ns = (int64_t)llround(h * 1e9);
    if (step(v, t_ns, dt_ns, in, out) != BMS_FIL_OK) return fmi2Error;
    c->value[VR_LOAD_CURRENT] = out[VCU_OUT_LOAD_CURRENT_A];
    c->value[VR_CMD_SEND] = c->value[VR_CHG_SEND] = 0.0;
    for (uint32_t k = 0; k < v->n_tx; k++) {  /* the frames vcu.c built, as signals */
        const uint8_t *d = v->tx[k].data;
        if (v->tx[k].id == ID_VCU_COMMAND) {
            c->value[VR_CMD_SEND] = 1.0;
            c->value[VR_CMD_REQUEST] = bits(d, 12, 4);
            c->value[VR_CMD_CONTACTOR] = bits(d, 16, 2);
        } else if (v->tx[k].id == ID_CHG_STATUS) {
            c->value[VR_CHG_SEND] = 1.0;
            c->value[VR_CHG_CONNECTED] = bits(d, 12, 1);
            c->value[VR_CHG_MAX_V] = bits(d, 16, 16) * 0.1;
            c->value[VR_CHG_MAX_A] = bits(d, 32, 16) * 0.1;
        }
    }
    v->n_tx = 0;
    return fmi2OK;
}

#define CHECK_VR(vr) do { if ((vr) >= N_VR) return fmi2Error; } while (0)
fmi2Status fmi2SetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Real value[]) {
    for (size_t k = 0; k < n; k++) { CHECK_VR(vr[k]); ((component *)c)->value[vr[k]] = value[k]; }
    return fmi2OK;
}
fmi2Status fmi2GetReal(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Real value[]) {
    for (size_t k = 0; k < n; k++) { CHECK_VR(vr[k]); value[k] = ((component *)c)->value[vr[k]]; }
    return fmi2OK;
}
fmi2Status fmi2SetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Integer value[]) {
    for (size_t k = 0; k < n; k++) { CHECK_VR(vr[k]); ((component *)c)->value[vr[k]] = value[k]; }
    return fmi2OK;
}
fmi2Status fmi2GetInteger(fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Integer value[]) {
    for (size_t k = 0; k < n; k++) { CHECK_VR(vr[k]); value[k] = (fmi2Integer)((component *)c)->value[vr[k]]; }
    return fmi2OK;
}

/* the rest of the FMI 2.0 co-simulation interface: nothing to do, or not supported */
const char *fmi2GetTypesPlatform(void) { return fmi2TypesPlatform; }
const char *fmi2GetVersion(void) { return fmi2Version; }
fmi2Status fmi2SetDebugLogging(fmi2Component c, fmi2Boolean on, size_t n, const fmi2String cat[]) {
    (void)c; (void)on; (void)n; (void)cat; return fmi2OK;
}
fmi2Status fmi2SetupExperiment(fmi2Component c, fmi2Boolean tol_on, fmi2Real tol, fmi2Real t0, fmi2Boolean stop_on,
                               fmi2Real stop) {
    (void)c; (void)tol_on; (void)tol; (void)t0; (void)stop_on; (void)stop; return fmi2OK;
}
fmi2Status fmi2EnterInitializationMode(fmi2Component c) { (void)c; return fmi2OK; }
fmi2Status fmi2ExitInitializationMode(fmi2Component c) { (void)c; return fmi2OK; }
fmi2Status fmi2Terminate(fmi2Component c) { (void)c; return fmi2OK; }
fmi2Status fmi2Reset(fmi2Component c) { return reset(((component *)c)->v) == BMS_FIL_OK ? fmi2OK : fmi2Error; }
#define UNSUPPORTED(name, ...) fmi2Status name(__VA_ARGS__) { return fmi2Error; }
UNSUPPORTED(fmi2GetBoolean, fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2Boolean v[])
UNSUPPORTED(fmi2SetBoolean, fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2Boolean v[])
UNSUPPORTED(fmi2GetString, fmi2Component c, const fmi2ValueReference vr[], size_t n, fmi2String v[])
UNSUPPORTED(fmi2SetString, fmi2Component c, const fmi2ValueReference vr[], size_t n, const fmi2String v[])
UNSUPPORTED(fmi2GetFMUstate, fmi2Component c, fmi2FMUstate *s)
UNSUPPORTED(fmi2SetFMUstate, fmi2Component c, fmi2FMUstate s)
UNSUPPORTED(fmi2FreeFMUstate, fmi2Component c, fmi2FMUstate *s)
UNSUPPORTED(fmi2SerializedFMUstateSize, fmi2Component c, fmi2FMUstate s, size_t *n)
UNSUPPORTED(fmi2SerializeFMUstate, fmi2Component c, fmi2FMUstate s, fmi2Byte b[], size_t n)
UNSUPPORTED(fmi2DeSerializeFMUstate, fmi2Component c, const fmi2Byte b[], size_t n, fmi2FMUstate *s)
UNSUPPORTED(fmi2GetDirectionalDerivative, fmi2Component c, const fmi2ValueReference u[], size_t nu,
            const fmi2ValueReference z[], size_t nz, const fmi2Real dv[], fmi2Real dz[])
UNSUPPORTED(fmi2SetRealInputDerivatives, fmi2Component c, const fmi2ValueReference vr[], size_t n,
            const fmi2Integer order[], const fmi2Real v[])
UNSUPPORTED(fmi2GetRealOutputDerivatives, fmi2Component c, const fmi2ValueReference vr[], size_t n,
            const fmi2Integer order[], fmi2Real v[])
UNSUPPORTED(fmi2CancelStep, fmi2Component c)
UNSUPPORTED(fmi2GetStatus, fmi2Component c, const fmi2StatusKind s, fmi2Status *v)
UNSUPPORTED(fmi2GetRealStatus, fmi2Component c, const fmi2StatusKind s, fmi2Real *v)
UNSUPPORTED(fmi2GetIntegerStatus, fmi2Component c, const fmi2StatusKind s, fmi2Integer *v)
UNSUPPORTED(fmi2GetBooleanStatus, fmi2Component c, const fmi2StatusKind s, fmi2Boolean *v)
UNSUPPORTED(fmi2GetStringStatus, fmi2Component c, const fmi2StatusKind s, fmi2String *v)
