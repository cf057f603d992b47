/* bms_fil_process.c - the firmware side of the process transport, in C.
 *
 * Link it with a firmware that implements bms_fil_get_api() (bms_fil.h) into an executable:
 *     cc -O2 -I DIR_OF_bms_fil.h my_firmware.c bms_fil_process.c -o my_firmware
 * The emulator starts that executable (kind = "process") and steps it: each command arrives as one byte on
 * BMS_FIL_CMD_FD, its data in the shared block BMS_FIL_SHM_FD; the answer is one byte (the return code) on
 * BMS_FIL_REPLY_FD after reply_sequence is set. Nothing here reads a clock: time comes from the host.
 */
#include "bms_fil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int env_fd(const char *name) {
    const char *value = getenv(name);
    if (value == NULL) {
        fprintf(stderr, "bms_fil_process: %s is not set: start this program from the emulator (kind = \"process\")\n",
                name);
        exit(2);
    }
    return atoi(value);
}

static void copy_text(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

static int read_byte(int fd, unsigned char *byte) {
    for (;;) {
        ssize_t n = read(fd, byte, 1);
        if (n == 1) return 1;
        if (n < 0 && errno == EINTR) continue;
        return 0; /* the host is gone */
    }
}

int main(void) {
    int shm_fd = env_fd("BMS_FIL_SHM_FD"), cmd_fd = env_fd("BMS_FIL_CMD_FD"), reply_fd = env_fd("BMS_FIL_REPLY_FD");
    struct stat st;
    if (fstat(shm_fd, &st) != 0 || (size_t)st.st_size < sizeof(bms_fil_shm)) {
        fprintf(stderr, "bms_fil_process: the shared block is missing or too small\n");
        return 2;
    }
    unsigned char *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
    if (base == MAP_FAILED) {
        perror("bms_fil_process: mmap");
        return 2;
    }
    bms_fil_shm *shm = (bms_fil_shm *)base;
    const bms_fil_api *api = bms_fil_get_api(BMS_FIL_ABI_VERSION);
    void *instance = NULL;
    unsigned char command;
    while (read_byte(cmd_fd, &command)) {
        int code = BMS_FIL_OK;
        shm->error[0] = 0;
        if (command == BMS_FIL_CMD_CREATE) {
            if (shm->magic != BMS_FIL_SHM_MAGIC || shm->abi_version != BMS_FIL_ABI_VERSION || api == NULL ||
                api->abi_version != BMS_FIL_ABI_VERSION) {
                snprintf(shm->error, sizeof shm->error, "ABI version mismatch: host %u, firmware %u",
                         shm->abi_version, api ? api->abi_version : 0u);
                shm->abi_version = api ? api->abi_version : 0u;
                code = BMS_FIL_UNSUPPORTED;
            } else {
                bms_fil_setup setup = shm->setup;
                setup.config = (const char *)(base + shm->config_offset);
                code = api->create(&setup, &instance, shm->error, sizeof shm->error);
                copy_text(shm->name, sizeof shm->name, api->name);
                copy_text(shm->version, sizeof shm->version, api->version);
                shm->state_size = (code == BMS_FIL_OK && api->state_size) ? api->state_size(instance) : 0;
            }
        } else if (instance == NULL) {
            copy_text(shm->error, sizeof shm->error, "no instance: create first");
            code = BMS_FIL_ERROR;
        } else if (command == BMS_FIL_CMD_STEP) {
            const double *inputs = (const double *)(base + shm->inputs_offset);
            double *outputs = (double *)(base + shm->outputs_offset);
            uint32_t count = 0;
            if (shm->rx_count && api->receive)
                code = api->receive(instance, (const bms_fil_frame *)(base + shm->rx_offset), shm->rx_count);
            if (code == BMS_FIL_OK) code = api->step(instance, shm->t_ns, shm->dt_ns, inputs, outputs);
            if (code == BMS_FIL_OK && api->transmit)
                code = api->transmit(instance, (bms_fil_frame *)(base + shm->tx_offset), shm->setup.max_frames, &count);
            shm->tx_count = count;
        } else if (command == BMS_FIL_CMD_RESET) {
            code = api->reset ? api->reset(instance) : BMS_FIL_UNSUPPORTED;
        } else if (command == BMS_FIL_CMD_SAVE) {
            size_t size = api->state_size ? api->state_size(instance) : 0;
            if (size == 0 || api->save_state == NULL) code = BMS_FIL_UNSUPPORTED;
            else if (size > shm->state_capacity) code = BMS_FIL_NO_SPACE;
            else code = api->save_state(instance, base + shm->state_offset, size);
            shm->state_used = code == BMS_FIL_OK ? size : 0;
        } else if (command == BMS_FIL_CMD_RESTORE) {
            code = api->restore_state ? api->restore_state(instance, base + shm->state_offset, shm->state_used)
                                      : BMS_FIL_UNSUPPORTED;
        } else if (command == BMS_FIL_CMD_QUIT) {
            api->destroy(instance);
            instance = NULL;
        } else {
            snprintf(shm->error, sizeof shm->error, "unknown command %u", command);
            code = BMS_FIL_ERROR;
        }
        if (code != BMS_FIL_OK && shm->error[0] == 0 && instance != NULL && api->last_error)
            copy_text(shm->error, sizeof shm->error, api->last_error(instance));
        shm->reply_sequence = shm->sequence;
        __sync_synchronize();
        unsigned char reply = (unsigned char)code;
        if (write(reply_fd, &reply, 1) != 1) break;
        if (command == BMS_FIL_CMD_QUIT) break;
    }
    if (instance) api->destroy(instance);
    return 0;
}
