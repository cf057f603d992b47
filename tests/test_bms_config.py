"""The BMS configuration: defaults for the solid-state preset, TOML loading, errors that name the key."""
import math

import pytest

from bms import ParameterError, load_pack
from bms.config import BmsConfig, load_config


def test_defaults_fit_the_solid_state_cell():
    c, cell = BmsConfig(), load_pack().cell
    assert c.cell_overvoltage_error_V == cell.voltage_max_V and c.cell_undervoltage_error_V == cell.voltage_min_V
    assert c.discharge_overtemp_warning_C == cell.temp_derate_start_C
    assert c.discharge_overtemp_error_C == cell.temp_operating_max_C
    assert c.discharge_overtemp_emergency_C == cell.temp_hard_max_C
    assert c.charge_undertemp_error_C == cell.temp_charge_min_C
    assert c.discharge_undertemp_warning_C == cell.temp_discharge_min_C
    assert c.discharge_undertemp_emergency_C == -math.inf  # a disabled level


def test_toml_table_over_the_defaults(tmp_path):
    path = tmp_path / "bms.toml"
    path.write_text("[bms]\nvcu_timeout_s = 0.3\ncell_overvoltage_debounce_s = [0.5, 0.5, 0.1]\n"
                    "discharge_undertemp_error_C = -30\n")
    c = load_config(path)
    assert c.vcu_timeout_s == 0.3 and c.cell_overvoltage_debounce_s == (0.5, 0.5, 0.1)
    assert c.discharge_undertemp_error_C == -30.0 and isinstance(c.discharge_undertemp_error_C, float)
    assert c.precharge_fraction == BmsConfig().precharge_fraction
    assert load_config(path, {"vcu_timeout_s": 0.2}).vcu_timeout_s == 0.2
    assert BmsConfig(**c.to_dict()) == c


@pytest.mark.parametrize("text,key,expected", [
    ("cell_overvoltage_debounce_s = [1.0, -0.5, 0.2]", "bms.cell_overvoltage_debounce_s", ">= 0"),
    ("vcu_timeout_s = -1.0", "bms.vcu_timeout_s", "> 0"),
    ("cell_overvoltage_warning_V = 4.28", "bms.cell_overvoltage_warning_V", "<= cell_overvoltage_error_V"),
    ("cell_undervoltage_warning_V = 2.4", "bms.cell_undervoltage_warning_V", ">= cell_undervoltage_error_V"),
    ("discharge_overtemp_error_C = 85.0", "bms.discharge_overtemp_error_C", "<= discharge_overtemp_emergency_C"),
    ("current_offset_warning_A = 50.0", "bms.current_offset_warning_A", "<= current_offset_error_A"),
    ("precharge_fraction = 1.5", "bms.precharge_fraction", "(0, 1]"),
    ("precharge_max_attempts = 0", "bms.precharge_max_attempts", "integer >= 1"),
    ("discharge_derate_factor = [0.0, 1.0]", "bms.discharge_derate_factor", "one per discharge_derate_temp_C"),
    ("cell_overvoltage_error_V = nan", "bms.cell_overvoltage_error_V", "a number"),
])
def test_bad_values_name_file_line_and_key(tmp_path, text, key, expected):
    path = tmp_path / "bad.toml"
    path.write_text(f"# a BMS configuration\n[bms]\ninit_time_s = 0.5\n{text}\n")
    with pytest.raises(ParameterError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.key == key and expected in message and str(path) in message, message
    assert info.value.line == 4, message


def test_unknown_key_suggests_the_nearest(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[bms]\nvcu_timout_s = 0.5\n")
    with pytest.raises(ParameterError, match=r"typo.toml:2: bms.vcu_timout_s.*did you mean 'vcu_timeout_s'"):
        load_config(path)
    with pytest.raises(ParameterError, match="did you mean 'precharge_timeout_s'"):
        BmsConfig().replace(precharge_timout_s=1.0)


def test_direct_construction_and_replace_are_validated():
    with pytest.raises(ParameterError, match="bms.charge_undertemp_warning_C"):
        BmsConfig(charge_undertemp_warning_C=-5.0)  # warning below the error threshold of an under-check
    with pytest.raises(ParameterError, match="bms.overcurrent_debounce_s.*3 debounce times"):
        BmsConfig().replace(overcurrent_debounce_s=[1.0, 2.0])
    with pytest.raises(ParameterError, match="bms.charge_end_cell_V.*never end"):
        BmsConfig(charge_end_cell_V=4.22)


def test_missing_table_and_bad_toml(tmp_path):
    path = tmp_path / "pack.toml"
    path.write_text('[pack]\ncell = "assb60"\n')
    with pytest.raises(ParameterError, match=r"a \[bms\] table"):
        load_config(path)
    path.write_text("[bms\n")
    with pytest.raises(ParameterError, match="valid TOML"):
        load_config(path)


def test_the_bms_takes_only_a_config():
    from bms import InputError
    from bms.emulator import Emulator
    with pytest.raises(InputError, match="config"):
        Emulator(load_pack().replace(pack={"n_series": 4, "n_modules": 1}), estimator=None,
                 config={"vcu_timeout_s": 1.0})


def test_from_dict_names_the_source():
    assert BmsConfig.from_dict({"vcu_timeout_s": 0.25}).vcu_timeout_s == 0.25
    with pytest.raises(ParameterError, match=r"scenario.toml: bms.vcu_timeout_s: expected a finite number > 0"):
        BmsConfig.from_dict({"vcu_timeout_s": 0}, source="scenario.toml")
