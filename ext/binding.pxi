# Included by every kernel: raw pointers into contiguous numpy arrays, bound once when a kernel is built.
# ``owners`` keeps the arrays alive; a wrong dtype or length raises before any pointer is used.


cdef double* dptr(object arr, Py_ssize_t n, str name, list owners) except NULL:
    """Raw pointer into a contiguous float64 array of n values (any shape) that ``owners`` keeps alive."""
    cdef double[::1] view = arr.reshape(-1)
    if view.shape[0] != n:
        raise InputError(name, f"{n} values", view.shape[0])
    owners.append(arr)
    return &view[0]


cdef unsigned char* uptr(object arr, Py_ssize_t n, str name, list owners) except NULL:
    cdef unsigned char[::1] view = arr.reshape(-1)
    if view.shape[0] != n:
        raise InputError(name, f"{n} values", view.shape[0])
    owners.append(arr)
    return &view[0]


cdef long long* lptr(object arr, Py_ssize_t n, str name, list owners) except NULL:
    cdef long long[::1] view = arr.reshape(-1)
    if view.shape[0] != n:
        raise InputError(name, f"{n} values", view.shape[0])
    owners.append(arr)
    return &view[0]
