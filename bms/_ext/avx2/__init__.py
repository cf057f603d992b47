"""The floating-point kernels built again with AVX2 (``-mavx2``, no FMA: the same bits as ``bms._ext``), chosen at
import where the CPU has it (``bms._kernels``; ``BMS_ISA=baseline`` keeps the baseline build)."""
