"""What the BMS puts in each of its frames, and what each received frame asks of it.

Only what the BMS measures (``emulator.sensors``), estimates (``emulator.estimator``) or decides
(``emulator.bms``) goes on the bus, never the plant's truth.
"""
from __future__ import annotations

import math
from operator import itemgetter

import numpy as np

__all__ = ["Publisher", "fault_level"]

_sum = np.add.reduce  # the reduction of ndarray.mean without its Python wrapper (a few us a call)


def _level(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _dtc_active(dtc) -> bool:
    active = getattr(dtc, "active", None)
    if active is not None:
        return bool(active)
    status = getattr(dtc, "status", None)
    if status is None:
        return True
    if isinstance(status, str):
        return status.lower() in ("active", "confirmed", "pending")
    name = getattr(status, "name", "")
    if name:
        return name.upper() in ("ACTIVE", "CONFIRMED", "PENDING")
    try:
        return bool(int(status) & 0x01)  # ISO 14229 bit 0: testFailed
    except (TypeError, ValueError):
        return True


def _has_value(obj, name: str) -> bool:
    try:
        value = getattr(obj, name)
    except AttributeError:
        return False
    return value is not None and not callable(value)


def fault_level(bms) -> int:
    """Highest fault level: the BMS's own attribute if it has one, else the highest active DTC's."""
    for attr in ("fault_level", "level"):
        value = getattr(bms, attr, None)
        if value is not None and not callable(value):
            return _level(value)
    levels = [_level(getattr(d, "level", 0)) for d in getattr(bms, "dtcs", ()) if _dtc_active(d)]
    return max(levels, default=0)


def _f(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return math.nan
    return x


_STATUS = ("BmsState", "FaultLevel", "FaultLatched", "ContactorMainPositive", "ContactorMainNegative",
           "ContactorPrecharge", "DischargeAllowed", "ChargeAllowed", "BalancingActive", "ChargerConnected",
           "CommFault", "StateRequestEcho", "ActiveDtcCount")
_PACK = ("PackVoltage", "LinkVoltage", "PackCurrent")
_LIMITS = ("DischargeCurrentLimit", "ChargeCurrentLimit", "DischargePowerLimit", "ChargePowerLimit")


class _SocOfEstimator:
    """``soc``/``soc_min``/``soc_max`` of an estimator that names its pack SOC ``pack_soc``."""

    def __init__(self, estimator):
        self.estimator = estimator

    soc = property(lambda self: self.estimator.pack_soc)
    soc_min = property(lambda self: self.estimator.soc_min)
    soc_max = property(lambda self: self.estimator.soc_max)


class Publisher:
    """Builds each TX message's signal values from the emulator's BMS-side state.

    ``handler(name)`` gives ``values(page)``: the values in the codec's ``signal_names(page)`` order, ready
    for the generated encoder. The 10 ms messages build tuples directly (their field order is checked
    against the DBC here, and reordered through a mapping if a DBC orders them differently); the slower
    ones build mappings.
    """

    def __init__(self, node, emulator, codec):
        self.node = node
        self.emulator = emulator
        self.codec = codec
        params = emulator.pack.params
        self.n_series = params.n_series
        self.charge_voltage_V = params.cell.voltage_max_V * params.n_series
        self.nominal_energy_kWh = params.capacity_Ah * params.n_series * params.cell.voltage_nominal_V / 1000.0
        bms = emulator.bms
        self._fault_level = ((lambda: int(bms.fault_level)) if _has_value(bms, "fault_level")
                             else (lambda: fault_level(bms)))
        if _has_value(bms, "balancing_groups"):
            self._balancing = lambda: bms.balancing_groups > 0
        else:
            balancing = getattr(bms, "balancing", None)
            if balancing is None:
                balancing = emulator.pack.state.balancing  # the BMS's own bleed command, not a measurement
            self._balancing = lambda: bool(balancing.any())
        # the pack's three readings straight from the sensor layer's reading array (its properties cost ~3x)
        sensors = emulator.sensors
        reading = getattr(getattr(sensors, "state", None), "reading", None)
        self._pack_items = None
        if isinstance(reading, np.ndarray) and callable(getattr(sensors, "channel", None)):
            kinds = ("pack_voltage", "link_voltage", "current")
            self._pack_items = (reading.item, *(sensors.channel(k) for k in kinds))
        self._tuples = {"BMS_Status": (self.status, _STATUS), "BMS_PackMeasurements": (self.pack, _PACK),
                        "BMS_Limits": (self.limits, _LIMITS), "BMS_CellVoltages": (self.cell_voltages, None),
                        "BMS_CellTemperatures": (self.cell_temperatures, None)}
        self._estimator = est = getattr(emulator, "estimator", None)
        core = getattr(est, "core_temp_C", None)  # an array the estimator updates in place
        self._core = core if isinstance(core, np.ndarray) and core.size else None
        self._soc_source = bms if hasattr(bms, "soc") else _SocOfEstimator(est) if est is not None else None
        self._per_page = {name: len(codec[name].signal_names(codec[name].pages[0]))
                          for name in ("BMS_CellVoltages", "BMS_CellTemperatures") if name in codec.messages}
        self._mappings = {"BMS_CellVoltageStats": self.cell_stats, "BMS_TemperatureStats": self.temperature_stats,
                          "BMS_SOC": self.soc, "BMS_Faults": self.faults, "BMS_SOP": self.sop,
                          "BMS_ChargeRequest": self.charge_request}

    def handler(self, name: str):
        """``values(page)`` in the codec's order for message ``name``, or None if the BMS has no such data."""
        message = self.codec.messages.get(name)
        if message is None:
            return None
        if name in self._tuples:
            fn, fields = self._tuples[name]
            if fields is None or all(message.signal_names(p) == fields for p in message.pages):
                return fn
            def reorder(page, fn=fn, fields=fields):
                values = dict(zip(fields, fn(page)))
                return [values.get(n, 0) for n in message.signal_names(page)]
            return reorder
        fn = self._mappings.get(name)
        if fn is None:
            return None
        getters = {p: itemgetter(*message.signal_names(p)) for p in message.pages}
        single = {p: len(message.signal_names(p)) == 1 for p in message.pages}

        def ordered(page, fn=fn):
            values = getters[page](fn(page))
            return (values,) if single[page] else values
        return ordered

    def pages(self, name: str) -> tuple:
        message = self.codec[name]
        if name == "BMS_CellVoltages":
            per = len(message.signal_names(message.pages[0]))
            return tuple(message.pages[: math.ceil(self.n_series / per)])
        if name == "BMS_CellTemperatures":
            per = len(message.signal_names(message.pages[0]))
            n = len(self.emulator.sensors.temperature_C)
            return tuple(message.pages[: math.ceil(n / per)])
        if name == "BMS_SOP":
            sop = getattr(getattr(self.emulator, "estimator", None), "sop", None)
            count = len(getattr(sop, "discharge_current_A", ())) if sop is not None else 0
            return tuple(message.pages[: max(1, min(count, len(message.pages)))])
        return message.pages

    # --- 10 ms (tuples, in the field order above) ------------------------------------------------------
    def status(self, page=None) -> tuple:
        e, node = self.emulator, self.node
        bms = e.bms
        f0, f1, f2 = e.sensors.contactor_feedback[:3].tolist()  # Python floats: cheaper to compare
        limits = bms.limits
        return (int(bms.state), self._fault_level(), 1 if bms.latched else 0, 1 if f0 > 0.5 else 0,
                1 if f1 > 0.5 else 0, 1 if f2 > 0.5 else 0,
                1 if limits.discharge_current_A > 0 else 0, 1 if limits.charge_current_A > 0 else 0,
                1 if self._balancing() else 0, 1 if node.charger_connected else 0,
                1 if node.comm_fault_active else 0, node.last_request, len(bms.dtcs))

    def pack(self, page=None) -> tuple:
        items = self._pack_items
        if items is not None:
            item, pack_V, link_V, current_A = items
            return (item(pack_V), item(link_V), item(current_A))
        s = self.emulator.sensors
        return (s.pack_voltage_V, s.link_voltage_V, s.current_A)

    def limits(self, page=None) -> tuple:
        lim = self.emulator.bms.limits
        return (lim.discharge_current_A, lim.charge_current_A, lim.discharge_power_W / 1000.0,
                lim.charge_power_W / 1000.0)

    def cell_voltages(self, page) -> list:
        n = self._per_page["BMS_CellVoltages"]
        values = self.emulator.sensors.cell_voltage_V[n * page:n * page + n].tolist()
        return values if len(values) == n else values + [0.0] * (n - len(values))

    def cell_temperatures(self, page) -> list:
        n = self._per_page["BMS_CellTemperatures"]
        values = self.emulator.sensors.temperature_C[n * page:n * page + n].tolist()
        return values if len(values) == n else values + [-50.0] * (n - len(values))

    # --- slower (mappings) ----------------------------------------------------------------------------------
    def cell_stats(self, page=None) -> dict:
        v = self.emulator.sensors.cell_voltage_V
        lo, hi = int(v.argmin()), int(v.argmax())
        return {"CellVoltageMin": float(v[lo]), "CellVoltageMax": float(v[hi]), "CellVoltageMinIndex": lo,
                "CellVoltageMaxIndex": hi, "CellVoltageMean": float(_sum(v)) / v.size}  # v.mean(), bit for bit

    def temperature_stats(self, page=None) -> dict:
        t = self.emulator.sensors.temperature_C
        lo, hi = int(t.argmin()), int(t.argmax())
        out = {"TemperatureMin": float(t[lo]), "TemperatureMax": float(t[hi]), "TemperatureMinIndex": lo,
               "TemperatureMaxIndex": hi, "CoreTemperatureMax": 0.0, "CoreTemperatureMaxIndex": 0,
               "CoreTemperatureValid": 0}
        core = self._core
        if core is not None:
            k = int(core.argmax())  # a NaN would come out here: then the estimate is not valid
            value = float(core[k])
            if math.isfinite(value):
                out.update(CoreTemperatureMax=value, CoreTemperatureMaxIndex=k, CoreTemperatureValid=1)
        return out

    def soc(self, page=None) -> dict:
        """The BMS's SOC (its estimator's, or its own count before the estimator is ready)."""
        source, est = self._soc_source, self._estimator
        soc = _f(source.soc if source is not None else math.nan)
        if not math.isfinite(soc):
            return {"SOC": 0.0, "SOCMin": 0.0, "SOCMax": 0.0, "EnergyRemaining": 0.0, "SOCValid": 0}
        energy = math.nan
        if est is not None and hasattr(est, "energy_remaining_kWh") and getattr(est, "initialised", True):
            energy = _f(est.energy_remaining_kWh)
        if not math.isfinite(energy):  # no state of energy (yet): the SOC's share of the nominal energy
            energy = soc * self.nominal_energy_kWh
        return {"SOC": 100.0 * soc, "SOCMin": 100.0 * _f(source.soc_min), "SOCMax": 100.0 * _f(source.soc_max),
                "EnergyRemaining": energy, "SOCValid": 1}

    def faults(self, page=None) -> dict:
        bms = self.emulator.bms
        return {"FaultLevelMax": fault_level(bms), "FaultsLatched": int(bool(bms.latched)),
                "WarningFlags": int(bms.warning_flags) & 0xFFFFFF, "ErrorFlags": int(bms.error_flags) & 0xFFFFFF}

    def sop(self, page) -> dict:
        message = self.codec["BMS_SOP"]
        names = message.signal_names(page)
        sop = getattr(getattr(self.emulator, "estimator", None), "sop", None)
        if sop is None:
            return dict.fromkeys(names, 0.0)
        values = (_f(sop.discharge_current_A[page]), _f(sop.charge_current_A[page]),
                  _f(sop.discharge_power_W[page]) / 1000.0, _f(sop.charge_power_W[page]) / 1000.0)
        return dict(zip(names, values))

    def charge_request(self, page=None) -> dict:
        bms = self.emulator.bms
        charging = int(bms.state) == 4  # BmsState.CHARGING
        current = _f(getattr(bms, "charge_request_A", bms.limits.charge_current_A)) if charging else 0.0
        voltage = _f(getattr(bms, "charge_request_V", 0.0)) or self.charge_voltage_V
        current = current if math.isfinite(current) else 0.0
        return {"ChargeVoltageRequest": voltage, "ChargeCurrentRequest": max(current, 0.0),
                "ChargeEnable": int(charging and current > 0)}
