# The firmware slot's transports: a firmware library called through the C ABI of bms_fil.h (dlopen and
# function pointers), and a firmware process stepped over shared memory with a one-byte pipe handshake.
# Both work on buffers allocated once: a tick costs no Python allocation (frames excepted: the bus needs
# python-can messages). Outputs are checked every tick (NaN, range, whole values) before they reach the
# actuators; a failure raises the slot's FirmwareError naming the firmware, the simulated time and the cause.

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from libc.math cimport isfinite
from libc.errno cimport errno, EINTR, EAGAIN

from bms.errors import InputError
from bms.fil.slot import (FirmwareAbiError, FirmwareCrash, FirmwareError, FirmwareOutputError,
                          FirmwareTimeout)

include "binding.pxi"

cdef extern from "bms_fil.h" nogil:
    enum: BMS_FIL_ABI_VERSION
    enum: BMS_FIL_ROLE_BMS
    enum: BMS_FIL_ROLE_VCU
    enum: BMS_FIL_FLAG_GLOBALS
    enum: BMS_FIL_FRAME_EXTENDED
    enum: BMS_FIL_FRAME_FD
    enum: BMS_FIL_FRAME_BRS
    enum: BMS_FIL_SHM_MAGIC
    enum: BMS_FIL_CMD_CREATE
    enum: BMS_FIL_CMD_STEP
    enum: BMS_FIL_CMD_RESET
    enum: BMS_FIL_CMD_SAVE
    enum: BMS_FIL_CMD_RESTORE
    enum: BMS_FIL_CMD_QUIT

    ctypedef struct bms_fil_frame:
        int64_t t_ns
        uint32_t id
        uint8_t len
        uint8_t flags
        uint8_t data[64]

    ctypedef struct bms_fil_setup:
        uint32_t abi_version
        uint32_t role
        uint32_t n_cells
        uint32_t n_temperatures
        uint32_t n_inputs
        uint32_t n_outputs
        uint32_t max_frames
        int64_t dt_ns
        const char *config

    ctypedef struct bms_fil_api:
        uint32_t abi_version
        uint32_t flags
        uint32_t roles
        const char *name
        const char *version
        int (*create)(const bms_fil_setup *setup, void **instance, char *error, size_t error_size)
        int (*reset)(void *instance)
        int (*step)(void *instance, int64_t t_ns, int64_t dt_ns, const double *inputs, double *outputs)
        int (*receive)(void *instance, const bms_fil_frame *frames, uint32_t count)
        int (*transmit)(void *instance, bms_fil_frame *frames, uint32_t capacity, uint32_t *count)
        size_t (*state_size)(void *instance)
        int (*save_state)(void *instance, void *buffer, size_t size)
        int (*restore_state)(void *instance, const void *buffer, size_t size)
        const char *(*last_error)(void *instance)
        void (*destroy)(void *instance)

    ctypedef const bms_fil_api *(*bms_fil_get_api_fn)(uint32_t host_abi_version)

    ctypedef struct bms_fil_shm:
        uint32_t magic
        uint32_t abi_version
        uint64_t sequence
        uint64_t reply_sequence
        bms_fil_setup setup
        int64_t t_ns
        int64_t dt_ns
        uint32_t rx_count
        uint32_t tx_count
        uint64_t state_size
        uint64_t state_used
        uint64_t total_size
        uint64_t config_offset
        uint64_t inputs_offset
        uint64_t outputs_offset
        uint64_t rx_offset
        uint64_t tx_offset
        uint64_t state_offset
        uint64_t state_capacity
        char name[64]
        char version[64]
        char error[512]

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flag)
    void *dlsym(void *handle, const char *symbol)
    int dlclose(void *handle)
    char *dlerror()
    enum: RTLD_NOW
    enum: RTLD_LOCAL

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN
    enum: POLLHUP
    enum: POLLERR

ABI_VERSION = BMS_FIL_ABI_VERSION
SHM_HEADER_SIZE = sizeof(bms_fil_shm)
FRAME_SIZE = sizeof(bms_fil_frame)
FLAG_GLOBALS = BMS_FIL_FLAG_GLOBALS
cdef enum:
    HISTORY = 16          # frames kept for a failure report (received and sent, newest last)
    ERROR_SIZE = 512
    # process transport failures (returned by _call)
    P_EOF = -2
    P_TIMEOUT = -3
    P_GARBAGE = -4
    P_IO = -5


cdef str _text(const char *s, Py_ssize_t n=-1):
    if s == NULL:
        return ""
    if n < 0:
        return (<bytes>s).decode("utf-8", "replace")
    cdef bytes b = s[:n]
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


cdef class Transport:
    """What both transports share: the frame buffers, the output check and the actuator write-back."""
    cdef public str name, version
    cdef public int role
    cdef public int n_inputs, n_outputs, n_cells, n_temperatures
    cdef public uint32_t max_frames
    cdef bms_fil_frame *rx
    cdef bms_fil_frame *tx
    cdef public uint32_t n_rx, n_tx
    cdef double *out
    cdef const double *inp
    cdef object _inputs, _outputs
    cdef unsigned char *cmd
    cdef unsigned char *bal
    cdef double *vcu_out
    cdef double lo_vcu, hi_vcu
    cdef bms_fil_frame history[HISTORY]
    cdef char history_dir[HISTORY]
    cdef int history_next, history_count
    cdef list owners
    cdef object out_array
    cdef public int64_t last_t_ns

    def __cinit__(self, *args, **kwargs):
        self.rx = self.tx = NULL
        self.out = NULL

    def __dealloc__(self):
        if self.rx != NULL:
            free(self.rx)
        if self.tx != NULL:
            free(self.tx)

    cdef _setup_buffers(self, int role, int n_cells, int n_temperatures, uint32_t max_frames, double *out):
        import numpy as np
        self.role, self.n_cells, self.n_temperatures, self.max_frames = role, n_cells, n_temperatures, max_frames
        if role == BMS_FIL_ROLE_BMS:
            self.n_inputs, self.n_outputs = n_cells + n_temperatures + 6, 3 + n_cells
        else:
            self.n_inputs, self.n_outputs = 6, 1
        self.rx = <bms_fil_frame *>calloc(max_frames, sizeof(bms_fil_frame))
        self.tx = <bms_fil_frame *>calloc(max_frames, sizeof(bms_fil_frame))
        if self.rx == NULL or self.tx == NULL:
            raise MemoryError()
        if out == NULL:
            self.out_array = np.zeros(self.n_outputs)
            self.owners = []
            self.out = dptr(self.out_array, self.n_outputs, "outputs", self.owners)
        else:
            self.out = out
        self.lo_vcu, self.hi_vcu = -5000.0, 5000.0
        self.inp = NULL
        self._inputs = self._outputs = None
        self.owners = [] if self.owners is None else self.owners

    cdef int _bind(self, object inputs, object outputs) except -1:
        """Pointers into the host's buffers (the same objects every tick: bound at the first step)."""
        self.inp = dptr(inputs, self.n_inputs, "inputs", self.owners)
        if self.role == BMS_FIL_ROLE_BMS:
            self.cmd = uptr(outputs.contactor_command, 3, "contactor_command", self.owners)
            self.bal = uptr(outputs.balancing, self.n_cells, "balancing", self.owners)
        else:
            self.vcu_out = dptr(outputs, 1, "outputs", self.owners)
        self._inputs, self._outputs = inputs, outputs
        return 0

    cdef inline void _remember(self, const bms_fil_frame *f, char direction) noexcept nogil:
        memcpy(&self.history[self.history_next], f, sizeof(bms_fil_frame))
        self.history_dir[self.history_next] = direction
        self.history_next = (self.history_next + 1) % HISTORY
        if self.history_count < HISTORY:
            self.history_count += 1

    def last_frames(self):
        """The last frames received ('rx') and sent ('tx'): (direction, t_s, id, data hex), newest last."""
        cdef int k, i
        out = []
        for k in range(self.history_count):
            i = (self.history_next - self.history_count + k) % HISTORY
            f = &self.history[i]
            out.append(("rx" if self.history_dir[i] == 1 else "tx", f.t_ns / 1e9, f"0x{f.id:X}",
                        bytes(f.data[:f.len]).hex(" ")))
        return out

    cdef int _check_outputs(self) except -1:
        """Outputs valid -> actuators; else FirmwareOutputError."""
        cdef int k
        cdef double x
        cdef double *o = self.out
        if self.role == BMS_FIL_ROLE_BMS:
            for k in range(self.n_outputs):
                x = o[k]
                if not (x == 0.0 or x == 1.0):
                    self._bad_output(k, x, "0 or 1")
            for k in range(3):
                self.cmd[k] = <unsigned char>o[k]
            for k in range(self.n_cells):
                self.bal[k] = <unsigned char>o[3 + k]
        else:
            x = o[0]
            if not (isfinite(x) and self.lo_vcu <= x <= self.hi_vcu):
                self._bad_output(0, x, f"a finite current in [{self.lo_vcu:g}, {self.hi_vcu:g}] A")
            self.vcu_out[0] = x
        return 0

    cdef _bad_output(self, int k, double x, str expected):
        from bms.fil.contract import bms_layout, vcu_layout
        layout = bms_layout(self.n_cells, self.n_temperatures) if self.role == BMS_FIL_ROLE_BMS else vcu_layout()
        raise FirmwareOutputError(self.name, f"outputs[{k}] ({layout.output_names()[k]}) = {x!r}: expected "
                                  f"{expected}", self.last_t_ns / 1e9, self.last_frames())

    def receive(self, msg, int64_t t_ns):
        """Queue one python-can message for the next step (the oldest are handed over first)."""
        cdef bms_fil_frame *f
        cdef const unsigned char[::1] data
        cdef Py_ssize_t n
        if self.n_rx >= self.max_frames:
            self._flush_rx()
        f = &self.rx[self.n_rx]
        payload = msg.data
        n = len(payload)
        if n > 64:
            n = 64
        f.t_ns = t_ns
        f.id = msg.arbitration_id
        f.len = <uint8_t>n
        f.flags = (BMS_FIL_FRAME_EXTENDED if msg.is_extended_id else 0) | (BMS_FIL_FRAME_FD if msg.is_fd else 0) | \
            (BMS_FIL_FRAME_BRS if msg.bitrate_switch else 0)
        if n:
            data = payload
            memcpy(f.data, &data[0], n)
        self._remember(f, 1)
        self.n_rx += 1

    def queued(self):
        """The frames received since the last step, waiting for the next: (``Frame``, t_ns), oldest first, with
        their extended, FD and bit-rate-switch flags (a snapshot of the bench puts them back with ``receive``)."""
        cdef uint32_t k
        cdef bms_fil_frame *f
        from bms.can.node import Frame
        out = []
        for k in range(self.n_rx):
            f = &self.rx[k]
            out.append((Frame.build(f.id, f.data[:f.len], is_extended_id=bool(f.flags & BMS_FIL_FRAME_EXTENDED),
                                    is_fd=bool(f.flags & BMS_FIL_FRAME_FD),
                                    bitrate_switch=bool(f.flags & BMS_FIL_FRAME_BRS)), f.t_ns))
        return out

    cdef int _flush_rx(self) except -1:
        raise FirmwareError(self.name, f"more than {self.max_frames} frames arrived in one tick",
                            self.last_t_ns / 1e9, self.last_frames())

    def transmit(self):
        """The frames the last step produced, as ``bms.can.node.Frame`` (stamped by the host)."""
        cdef uint32_t k
        cdef bms_fil_frame *f
        if self.n_tx == 0:
            return []
        from bms.can.node import Frame
        frames = []
        for k in range(self.n_tx):
            f = &self.tx[k]
            frames.append(Frame.build(f.id, f.data[:f.len], is_extended_id=bool(f.flags & BMS_FIL_FRAME_EXTENDED),
                                      is_fd=bool(f.flags & BMS_FIL_FRAME_FD)))
        self.n_tx = 0
        return frames

    cdef int _check_tx(self, uint32_t count) except -1:
        cdef uint32_t k
        cdef bms_fil_frame *f
        if count > self.max_frames:
            raise FirmwareError(self.name, f"transmit reported {count} frames, more than the {self.max_frames} "
                                f"it may write", self.last_t_ns / 1e9, self.last_frames())
        for k in range(count):
            f = &self.tx[k]
            f.t_ns = self.last_t_ns
            if f.len > (64 if f.flags & BMS_FIL_FRAME_FD else 8) or f.id > (0x1FFFFFFF if f.flags &
                                                                            BMS_FIL_FRAME_EXTENDED else 0x7FF):
                raise FirmwareError(self.name, f"transmit frame {k}: id 0x{f.id:X}, length {f.len}, flags "
                                    f"{f.flags}: not a valid CAN frame", self.last_t_ns / 1e9, self.last_frames())
            self._remember(f, 2)
        self.n_tx = count
        return 0


cdef class Library(Transport):
    """One instance of a firmware library (a shared object exporting ``bms_fil_get_api``)."""
    cdef void *handle
    cdef const bms_fil_api *api
    cdef void *inst
    cdef public str path
    cdef public uint32_t flags
    cdef bytes config

    def __cinit__(self, *args, **kwargs):
        self.handle = NULL
        self.inst = NULL
        self.api = NULL

    def __init__(self, str path, int role, int n_cells, int n_temperatures, int64_t dt_ns, str config="",
                 uint32_t max_frames=256):
        cdef bms_fil_get_api_fn get_api
        cdef bms_fil_setup setup
        cdef char error[ERROR_SIZE]
        cdef int code
        self.path = path
        self.name = path
        self.version = ""
        self._setup_buffers(role, n_cells, n_temperatures, max_frames, NULL)
        self.handle = dlopen(path.encode(), RTLD_NOW | RTLD_LOCAL)
        if self.handle == NULL:
            raise FirmwareAbiError(path, f"cannot load the library: {_text(dlerror())}")
        get_api = <bms_fil_get_api_fn>dlsym(self.handle, b"bms_fil_get_api")
        if get_api == NULL:
            raise FirmwareAbiError(path, "the library does not export bms_fil_get_api (see bms_fil.h)")
        self.api = get_api(BMS_FIL_ABI_VERSION)
        if self.api == NULL:
            raise FirmwareAbiError(path, f"bms_fil_get_api({BMS_FIL_ABI_VERSION}) returned NULL: the library does "
                                   f"not support ABI version {BMS_FIL_ABI_VERSION}")
        if self.api.abi_version != BMS_FIL_ABI_VERSION:
            raise FirmwareAbiError(path, f"ABI version mismatch: the library was built for version "
                                   f"{self.api.abi_version}, this emulator speaks {BMS_FIL_ABI_VERSION}")
        self.name = _text(self.api.name) or path
        self.version = _text(self.api.version)
        self.flags = self.api.flags
        if not (self.api.roles & (1u << role)):
            raise FirmwareAbiError(self.name, f"the library does not implement the {'BMS' if role == 1 else 'VCU'} "
                                   f"role (roles mask {self.api.roles})")
        missing = [label for label, absent in (("create", self.api.create == NULL), ("step", self.api.step == NULL),
                                               ("destroy", self.api.destroy == NULL),
                                               ("last_error", self.api.last_error == NULL)) if absent]
        if missing:
            raise FirmwareAbiError(self.name, f"the api table has no {', '.join(missing)} function")
        self.config = config.encode()
        memset(&setup, 0, sizeof(setup))
        setup.abi_version = BMS_FIL_ABI_VERSION
        setup.role = role
        setup.n_cells, setup.n_temperatures = n_cells, n_temperatures
        setup.n_inputs, setup.n_outputs = self.n_inputs, self.n_outputs
        setup.max_frames = max_frames
        setup.dt_ns = dt_ns
        setup.config = self.config
        error[0] = 0
        code = self.api.create(&setup, &self.inst, error, ERROR_SIZE)
        if code != 0 or self.inst == NULL:
            self.inst = NULL
            raise FirmwareError(self.name, f"create failed (code {code}): {_text(error, ERROR_SIZE) or 'no message'}")

    cdef str _error(self, int code, str call):
        msg = _text(self.api.last_error(self.inst)) if self.inst != NULL else ""
        return f"{call} returned {code}: {msg or 'no message'}"

    def step(self, int64_t t_ns, int64_t dt_ns, inputs, outputs):
        """receive (the queued frames) -> step -> transmit; outputs checked and written to the actuators."""
        cdef int code
        cdef uint32_t count = 0
        if inputs is not self._inputs or outputs is not self._outputs:
            self._bind(inputs, outputs)
        if self.inst == NULL:
            raise FirmwareError(self.name, "the instance is closed")
        self.last_t_ns = t_ns
        if self.n_rx:
            if self.api.receive == NULL:
                self.n_rx = 0
            else:
                code = self.api.receive(self.inst, self.rx, self.n_rx)
                self.n_rx = 0
                if code != 0:
                    raise FirmwareError(self.name, self._error(code, "receive"), t_ns / 1e9, self.last_frames())
        code = self.api.step(self.inst, t_ns, dt_ns, self.inp, self.out)
        if code != 0:
            raise FirmwareError(self.name, self._error(code, "step"), t_ns / 1e9, self.last_frames())
        self._check_outputs()
        if self.api.transmit != NULL:
            code = self.api.transmit(self.inst, self.tx, self.max_frames, &count)
            if code != 0:
                raise FirmwareError(self.name, self._error(code, "transmit"), t_ns / 1e9, self.last_frames())
            if count:
                self._check_tx(count)

    def reset(self):
        cdef int code
        if self.api.reset == NULL:
            raise FirmwareError(self.name, "reset is not implemented")
        code = self.api.reset(self.inst)
        if code != 0:
            raise FirmwareError(self.name, self._error(code, "reset"))
        self.n_rx = self.n_tx = 0

    def save_state(self) -> bytes:
        cdef size_t n
        cdef int code
        cdef unsigned char[::1] view
        if self.api.state_size == NULL or self.api.save_state == NULL:
            raise FirmwareError(self.name, "save_state is not implemented")
        n = self.api.state_size(self.inst)
        if n == 0:
            raise FirmwareError(self.name, "save_state is not supported (state_size is 0)")
        buffer = bytearray(n)
        view = buffer
        code = self.api.save_state(self.inst, &view[0], n)
        if code != 0:
            raise FirmwareError(self.name, self._error(code, "save_state"))
        return bytes(buffer)

    def restore_state(self, const unsigned char[::1] state):
        cdef int code
        if self.api.restore_state == NULL:
            raise FirmwareError(self.name, "restore_state is not implemented")
        code = self.api.restore_state(self.inst, &state[0] if state.shape[0] else NULL, state.shape[0])
        if code != 0:
            raise FirmwareError(self.name, self._error(code, "restore_state"))

    def close(self):
        if self.inst != NULL:
            self.api.destroy(self.inst)
            self.inst = NULL
        if self.handle != NULL:
            dlclose(self.handle)
            self.handle = NULL

    def __dealloc__(self):
        self.close()


cdef class Channel(Transport):
    """The host end of a firmware process: commands over shared memory, a one-byte handshake on two pipes,
    every wait bounded by a wall-clock deadline."""
    cdef unsigned char *base
    cdef bms_fil_shm *shm
    cdef object mm, view_ref
    cdef int cmd_fd, reply_fd
    cdef public int timeout_ms
    cdef public int last_code
    cdef public object exit_status    # () -> str: how the process ended (for a crash report)

    def __init__(self, mm, int cmd_fd, int reply_fd, int role, int n_cells, int n_temperatures, int64_t dt_ns,
                 uint32_t max_frames, int timeout_ms, str name):
        cdef unsigned char[::1] view = mm
        self.mm = mm
        self.view_ref = memoryview(mm)  # the block stays mapped while this channel lives
        self.base = &view[0]
        self.shm = <bms_fil_shm *>self.base
        self.cmd_fd, self.reply_fd = cmd_fd, reply_fd
        self.timeout_ms = timeout_ms
        self.name, self.version = name, ""
        self.exit_status = None
        self._setup_buffers(role, n_cells, n_temperatures, max_frames, NULL)

    @staticmethod
    def layout(int role, int n_cells, int n_temperatures, uint32_t max_frames, size_t config_size,
               size_t state_capacity):
        """Offsets of the block's areas and its total size (every area 8-byte aligned)."""
        cdef size_t n_in = n_cells + n_temperatures + 6 if role == BMS_FIL_ROLE_BMS else 6
        cdef size_t n_out = 3 + n_cells if role == BMS_FIL_ROLE_BMS else 1
        offsets = {}
        at = (sizeof(bms_fil_shm) + 63) // 64 * 64
        for key, size in (("config", config_size + 1), ("inputs", 8 * n_in), ("outputs", 8 * n_out),
                          ("rx", max_frames * sizeof(bms_fil_frame)), ("tx", max_frames * sizeof(bms_fil_frame)),
                          ("state", state_capacity)):
            offsets[key] = at
            at += (size + 63) // 64 * 64
        return offsets, at, n_in, n_out

    def write_setup(self, dict offsets, size_t total, bytes config, int64_t dt_ns, size_t state_capacity):
        cdef bms_fil_shm *s = self.shm
        memset(s, 0, sizeof(bms_fil_shm))
        s.magic = BMS_FIL_SHM_MAGIC
        s.abi_version = BMS_FIL_ABI_VERSION
        s.setup.abi_version = BMS_FIL_ABI_VERSION
        s.setup.role = self.role
        s.setup.n_cells, s.setup.n_temperatures = self.n_cells, self.n_temperatures
        s.setup.n_inputs, s.setup.n_outputs = self.n_inputs, self.n_outputs
        s.setup.max_frames = self.max_frames
        s.setup.dt_ns = dt_ns
        s.total_size = total
        s.config_offset, s.inputs_offset, s.outputs_offset = offsets["config"], offsets["inputs"], offsets["outputs"]
        s.rx_offset, s.tx_offset, s.state_offset = offsets["rx"], offsets["tx"], offsets["state"]
        s.state_capacity = state_capacity
        self.out = <double *>(self.base + s.outputs_offset)
        memcpy(self.base + s.config_offset, <const char *>config, len(config))
        (self.base + s.config_offset)[len(config)] = 0

    cdef int _call(self, uint8_t command) noexcept nogil:
        """One command: sequence +1, the byte to CMD, wait (bounded) for the byte on REPLY."""
        cdef uint8_t byte = command
        cdef ssize_t n
        cdef pollfd p
        cdef int r
        if self.cmd_fd < 0:
            return P_EOF
        self.shm.sequence += 1
        while True:
            n = write(self.cmd_fd, &byte, 1)
            if n == 1:
                break
            if n < 0 and (errno == EINTR or errno == EAGAIN):
                continue
            return P_EOF
        p.fd = self.reply_fd
        p.events = POLLIN
        while True:
            p.revents = 0
            r = poll(&p, 1, self.timeout_ms)
            if r == 0:
                return P_TIMEOUT
            if r < 0:
                if errno == EINTR:
                    continue
                return P_IO
            break
        n = read(self.reply_fd, &byte, 1)
        while n < 0 and errno == EINTR:
            n = read(self.reply_fd, &byte, 1)
        if n == 0:
            return P_EOF
        if n < 0:
            return P_IO
        if self.shm.reply_sequence != self.shm.sequence or self.shm.magic != BMS_FIL_SHM_MAGIC:
            return P_GARBAGE
        return byte

    cdef int _do(self, uint8_t command, str call) except -1:
        cdef int code
        with nogil:
            code = self._call(command)
        self.last_code = code
        if code == 0:
            return 0
        t_s = self.last_t_ns / 1e9 if command == BMS_FIL_CMD_STEP else None
        frames = self.last_frames()
        if code == P_TIMEOUT:
            raise FirmwareTimeout(self.name, f"{call}: no answer within {self.timeout_ms / 1000.0:g} s (wall clock)",
                                  t_s, frames)
        if code == P_EOF or code == P_IO:
            how = self.exit_status() if self.exit_status is not None else ""
            raise FirmwareCrash(self.name, f"{call}: the process is gone{': ' + how if how else ''}", t_s, frames)
        if code == P_GARBAGE:
            raise FirmwareError(self.name, f"{call}: the answer is garbage (sequence {self.shm.reply_sequence}, "
                                f"expected {self.shm.sequence}; magic 0x{self.shm.magic:08X})", t_s, frames)
        message = _text(self.shm.error, 512) or "no message"
        if command == BMS_FIL_CMD_CREATE and self.shm.abi_version != BMS_FIL_ABI_VERSION:
            raise FirmwareAbiError(self.name, f"ABI version mismatch: the process speaks version "
                                   f"{self.shm.abi_version}, this emulator {BMS_FIL_ABI_VERSION} ({message})")
        raise FirmwareError(self.name, f"{call} returned {code}: {message}", t_s, frames)

    def create(self):
        self._do(BMS_FIL_CMD_CREATE, "create")
        self.name = _text(self.shm.name, 64) or self.name
        self.version = _text(self.shm.version, 64)
        return self.shm.state_size

    def step(self, int64_t t_ns, int64_t dt_ns, inputs, outputs):
        cdef bms_fil_shm *s = self.shm
        cdef uint32_t count
        if inputs is not self._inputs or outputs is not self._outputs:
            self._bind(inputs, outputs)
        self.last_t_ns = t_ns
        memcpy(self.base + s.inputs_offset, self.inp, self.n_inputs * sizeof(double))
        if self.n_rx:
            memcpy(self.base + s.rx_offset, self.rx, self.n_rx * sizeof(bms_fil_frame))
        s.rx_count = self.n_rx
        s.t_ns, s.dt_ns = t_ns, dt_ns
        s.tx_count = 0
        self.n_rx = 0
        self._do(BMS_FIL_CMD_STEP, "step")
        self._check_outputs()
        count = s.tx_count
        if count:
            if count <= self.max_frames:
                memcpy(self.tx, self.base + s.tx_offset, count * sizeof(bms_fil_frame))
            self._check_tx(count)

    def reset(self):
        self._do(BMS_FIL_CMD_RESET, "reset")
        self.n_rx = self.n_tx = 0

    def save_state(self) -> bytes:
        self._do(BMS_FIL_CMD_SAVE, "save_state")
        n = self.shm.state_used
        if n > self.shm.state_capacity:
            raise FirmwareError(self.name, f"save_state: {n} bytes, more than the {self.shm.state_capacity} "
                                f"of the state area")
        return bytes((<char *>(self.base + self.shm.state_offset))[:n])

    def restore_state(self, const unsigned char[::1] state):
        if <uint64_t>state.shape[0] > self.shm.state_capacity:
            raise FirmwareError(self.name, f"restore_state: {state.shape[0]} bytes do not fit the state area")
        if state.shape[0]:
            memcpy(self.base + self.shm.state_offset, &state[0], state.shape[0])
        self.shm.state_used = state.shape[0]
        self._do(BMS_FIL_CMD_RESTORE, "restore_state")

    def detach(self):
        """Forget the pipes (the owner closes them): any later command fails as 'the process is gone'."""
        self.cmd_fd = self.reply_fd = -1

    def quit(self):
        """Ask the process to destroy its instance and exit (no wait for the answer beyond the deadline)."""
        cdef int code
        with nogil:
            code = self._call(BMS_FIL_CMD_QUIT)
        return code
