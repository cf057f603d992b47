"""Index layouts shared by the compiled kernels and their NumPy twins (one place, so they never drift)."""

# Pack scalars (PlantState.scalars)
LINK_VOLTAGE = 0      # V, DC-link capacitor voltage at the end of the step
PACK_VOLTAGE = 1      # V, series-string terminal voltage (pack side of the contactors), end of step
PACK_CURRENT = 2      # A, string current averaged over the step, positive when discharging
PACK_CURRENT_PEAK = 3  # A, largest |current| within the step (inrush), signed
N_SCALARS = 4

# Contactors (PlantState.contactor_*)
MAIN_POSITIVE = 0
MAIN_NEGATIVE = 1
PRECHARGE = 2
CONTACTOR_NAMES = ("main_positive", "main_negative", "precharge")

# Sensor fault modes (SensorState.fault_mode)
FAULT_NONE = 0
FAULT_OPEN_WIRE = 1
FAULT_STUCK = 2
FAULT_DRIFT = 3
FAULT_OFFSET = 4

# Numerics: Arrhenius factors are refreshed when the core temperature has moved this far (K),
# so the cost of exp() is paid only when temperature changes.
ARRHENIUS_REFRESH_K = 0.01
# ... and evaluated within this range of temperatures (degC), the model's validity.
ARRHENIUS_MIN_C = -60.0
ARRHENIUS_MAX_C = 300.0
# Plett's instantaneous-hysteresis sign follows the string current only above this fraction of 1C.
HYSTERESIS_SIGN_C_RATE = 0.01
# A sensor sample is due when simulated time is within this of its deadline (float sums of ticks drift).
SAMPLE_TIME_TOLERANCE_S = 1e-9
