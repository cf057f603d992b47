# What the CPU this runs on can do, for the choice of kernel build (bms._kernels): the AVX2 variants of the
# floating-point kernels (bms._ext.avx2, built with -mavx2 and no FMA, so the same bits as the baseline).
cdef extern from *:
    """
    static int bms_cpu_has_avx2(void) {
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");   /* the CPU's flag and the OS's saving of the YMM registers */
    #else
        return 0;
    #endif
    }
    """
    int bms_cpu_has_avx2() noexcept nogil


def has_avx2() -> bool:
    """True where the AVX2 kernels can run."""
    return bool(bms_cpu_has_avx2())
