import math

import pytest
import tomli_w

from bms import ParameterError, load_cell, load_pack, preset_names, save_toml


def test_presets_match_reference():
    pack = load_pack("assb60-192s2p")
    cell = load_cell("assb60")
    assert pack.cell == cell
    assert (pack.n_series, pack.n_parallel, pack.n_cells) == (192, 2, 384)
    assert pack.capacity_Ah == 120.0
    assert len(cell.ocv_V) == 21 and cell.ocv_V[0] == 2.403 and cell.ocv_V[-1] == 4.209
    assert cell.r0_ohm == 1.5e-3 and cell.tau2_s == 120.0
    # 84 kWh class: nominal voltage x capacity
    assert 80 < pack.n_series * cell.voltage_nominal_V * pack.capacity_Ah / 1000 < 86
    assert {"assb60", "assb60-192s2p", "assb60-96s4p"} <= set(preset_names())


def test_toml_round_trip(tmp_path):
    pack = load_pack("assb60-192s2p").replace(cell={"capacity_Ah": 64.0}, pack={"n_series": 96, "n_modules": 6})
    path = save_toml(pack, tmp_path / "pack.toml")
    assert load_pack(path) == pack
    cell_path = save_toml(pack.cell, tmp_path / "cell.toml")
    assert load_cell(cell_path) == pack.cell


def _write_with(tmp_path, section, key, value):
    """A pack TOML with one value replaced; returns its path and the key's line."""
    data = load_pack().to_dict()
    data[section][key] = value
    path = tmp_path / "p.toml"
    text = tomli_w.dumps(data)
    path.write_text(text)
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key} ="):
            return path, number
    raise AssertionError(f"{section}.{key} not found")


@pytest.mark.parametrize("section,key,value,expected", [
    ("cell", "capacity_Ah", -60.0, "> 0"),
    ("cell", "ocv_V", [2.4, 3.5, 3.4, 4.2], "strictly increasing"),
    ("cell", "r0_ohm", math.nan, "finite"),
    ("cell", "charge_limit_C_rate", [0.0, 0.1, 1.0], "one per charge_limit_temp_C"),
    ("cell", "entropic_mV_per_K", [], "at least 2"),
    ("pack", "n_modules", 7, "divisor"),
    ("sensors", "current_period_s", 0.0, "> 0"),
])
def test_bad_parameters_name_file_line_and_key(tmp_path, section, key, value, expected):
    path, line = _write_with(tmp_path, section, key, value)
    with pytest.raises(ParameterError) as info:
        load_pack(path)
    message = str(info.value)
    assert f"{section}.{key}" in message and expected in message and str(path) in message
    assert info.value.line == line


def test_unknown_key_suggests_nearest(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[pack]\ncell = "assb60"\n[cell]\ncapacty_Ah = 61.0\n')
    with pytest.raises(ParameterError, match=r"p.toml:4: cell.capacty_Ah.*did you mean 'capacity_Ah'"):
        load_pack(path)


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ParameterError, match="did you mean 'assb60-192s2p'"):
        load_pack("assb60-192s2")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pack\n")
    with pytest.raises(ParameterError, match="valid TOML"):
        load_pack(bad)


def test_overrides_are_validated():
    with pytest.raises(ParameterError, match="cell.tau1_s"):
        load_pack(overrides={"cell": {"tau1_s": math.inf}})
    assert load_pack(overrides={"cell": {"tau1_s": 12}}).cell.tau1_s == 12.0
