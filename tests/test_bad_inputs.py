"""Malformed scenarios, parameter files, DBC files and [firmware] tables, table-driven, through the CLI
(issue 9, items 14-17): each exits 2 with one line naming the file and the key, before the first tick, never
a traceback, never a summary that claims success, never the contents of a file it was pointed at.
(Replay logs and mappings: tests/test_replay_bad_inputs.py.)
"""
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bms
from hil.cli import main
from hil.replay import example_path

BASE = """[scenario]
name = "bad"
seed = 1
initial_soc = 0.8

[[step]]
kind = "rest"
duration_s = 1.0
"""
CYCLE = "time_s,speed_mps\n0,0\n1,2\n2,0\n"          # cycle.csv beside every scenario
DRIVE = BASE + '\n[[step]]\nkind = "drive"\ncycle = "cycle.csv"\n'
DRIVE_LINE = DRIVE.count("\n")                         # the drive step's cycle line
END = BASE.count("\n") + 1                             # the first line of a table appended to BASE
SENSOR = "[[fault]]\nkind = 'sensor'\nsensor = 'cell_voltage'\nindex = 3\nfault = 'open_wire'\n"
PRESET = (Path(bms.__file__).parent / "presets" / "assb60-192s2p.toml").read_text(encoding="utf-8")
PACK = """[pack]
cell = "assb60"
n_series = 16
n_parallel = 1
n_modules = 1
link_capacitance_F = 0.0015
precharge_resistance_ohm = 40.0
main_path_resistance_ohm = 0.0005
link_bleed_resistance_ohm = 100000.0
balancing_resistance_ohm = 33.0
""" + PRESET[PRESET.index("[spread]"):]             # a 16s1p pack file: lines 1-10 as written here
SECRET = "root:x:0:0:do-not-print-me"                 # a file no error may quote


def _sw(old, new, text=BASE):
    assert old in text, old
    return text.replace(old, new, 1)


def _pack(old, new):
    return {"pack.toml": _sw(old, new, PACK)}


def _with_pack(text=BASE):
    return _sw("seed = 1", 'seed = 1\npack = "pack.toml"', text)


def _firmware(table):
    return BASE + "\n[firmware]\n" + table


# (id, scenario text, other files beside it, what the one error line must name); "{d}" is the folder
SCENARIOS = [
    # the [scenario] table
    ("negative seed", _sw("seed = 1", "seed = -1"), {}, ["scen.toml:3:", "scenario.seed", "integer >= 0"]),
    ("seed not an integer", _sw("seed = 1", "seed = 1.5"), {}, ["scen.toml:3:", "scenario.seed", "an integer"]),
    ("tick of a nanosecond", _sw("seed = 1", "seed = 1\ndt_s = 1e-9"), {},
     ["scen.toml:4:", "scenario.dt_s", "0.001 ... 0.1 s"]),
    ("tick of 1e308 s", _sw("seed = 1", "seed = 1\ndt_s = 1e308"), {}, ["scen.toml:4:", "scenario.dt_s"]),
    ("tick infinite", _sw("seed = 1", "seed = 1\ndt_s = inf"), {}, ["scen.toml:4:", "scenario.dt_s", "finite"]),
    ("initial SOC in percent", _sw("initial_soc = 0.8", "initial_soc = 80"), {},
     ["scen.toml:4:", "scenario.initial_soc", "[0, 1]"]),
    ("misspelt scenario key", _sw("seed = 1", "sed = 1"), {}, ["scen.toml:3:", "scenario.sed", "did you mean 'seed'"]),
    ("unknown mode", _sw("seed = 1", 'seed = 1\nmode = "lockstp"'), {},
     ["scen.toml:4:", "scenario.mode", "did you mean 'lockstep'"]),
    ("max_ticks above its ceiling", _sw("seed = 1", "seed = 1\nmax_ticks = 10000000000"), {},
     ["scen.toml:4:", "scenario.max_ticks", "1,000,000,000"]),
    ("scenario not a table", "scenario = 5\n" + BASE.replace("[scenario]\n", "[x]\n"), {},
     ["scen.toml:1:", "scenario", "a [scenario] table"]),
    ("unknown table", BASE + "[[stp]]\nkind = 'rest'\n", {}, [f"scen.toml:{END}:", "stp", "did you mean 'step'"]),
    ("not TOML", BASE + "[[step]\n", {}, [f"scen.toml:{END}:", "file", "not valid TOML"]),
    ("not UTF-8", None, {"scen.toml": b"[scenario]\nname = '\xff\xfe'\n"}, ["scen.toml:2", "not UTF-8"]),
    ("arrays nested 5000 deep", "x = " + "[" * 5000 + "]" * 5000 + "\n" + BASE, {},
     ["scen.toml", "file", "nested too deeply"]),
    ("inline tables nested 3000 deep", "x = " + "{a=" * 3000 + "1" + "}" * 3000 + "\n" + BASE, {},
     ["scen.toml", "file", "nested too deeply"]),
    ("no steps", "[scenario]\nname = 'x'\n", {}, ["scen.toml", "step", "at least one"]),
    ("scenario a device", ["run", "/dev/zero"], {}, ["/dev/zero", "file", "a device"]),
    ("scenario a directory", ["run", "{d}"], {}, ["file", "a directory"]),
    ("scenario huge", None, {"scen.toml": 9 * 1024 * 1024}, ["scen.toml", "file", "9,437,184 bytes"]),
    ("scenario missing", ["run", "{d}/nowhere.toml"], {}, ["nowhere.toml", "no such file or built-in scenario"]),
    # steps
    ("step as a table, not an array", BASE.replace("[[step]]", "[step]"), {},
     ["scen.toml:6:", "step", "[[step]] tables"]),
    ("step kind a list", BASE + "[[step]]\nkind = ['rest']\nduration_s = 1.0\n", {},
     [f"scen.toml:{END + 1}:", "step[1].kind", "expected a string"]),
    ("misspelt step kind", _sw('kind = "rest"', 'kind = "rset"'), {}, ["scen.toml:7:", "step[0].kind", "'rest'"]),
    ("duration not a number", _sw("duration_s = 1.0", 'duration_s = "1 s"'), {},
     ["scen.toml:8:", "step[0].duration_s", "a number"]),
    ("duration NaN", _sw("duration_s = 1.0", "duration_s = nan"), {}, ["scen.toml:8:", "step[0].duration_s", "finite"]),
    ("a rest of 1e12 s", _sw("duration_s = 1.0", "duration_s = 1e12"), {},
     ["scen.toml:6:", "step", "10,000,000 ticks", "max_ticks"]),
    ("repeat ten billion", DRIVE + "repeat = 10000000000\n", {"cycle.csv": CYCLE},
     ["scen.toml:", "step", "ticks", "max_ticks"]),
    ("a rest shorter than a tick", _sw("duration_s = 1.0", "duration_s = 0.001"), {},
     ["scen.toml:8:", "step[0].duration_s", "shorter than one tick"]),
    ("repeat zero", DRIVE + "repeat = 0\n", {"cycle.csv": CYCLE}, ["scen.toml:", "step[1].repeat", "> 0"]),
    ("charge target in percent", BASE + "[[step]]\nkind = 'charge'\ntarget_soc = 80.0\n", {},
     [f"scen.toml:{END + 2}:", "step[1].target_soc", "(0, 1]"]),
    ("charge current negative", BASE + "[[step]]\nkind = 'charge'\ntarget_soc = 0.9\nmax_current_A = -5.0\n", {},
     [f"scen.toml:{END + 3}:", "step[1].max_current_A", "> 0 A"]),
    ("charge method misspelt", BASE + "[[step]]\nkind = 'charge'\ntarget_soc = 0.9\nmethod = 'dcfcc'\n", {},
     [f"scen.toml:{END + 3}:", "step[1].method", "did you mean 'dcfc'"]),
    # drive steps: the vehicle and the cycle, read before the first tick
    ("vehicle key misspelt", DRIVE + "vehicle = { mass = 1500 }\n", {"cycle.csv": CYCLE},
     [f"scen.toml:{DRIVE_LINE + 1}:", "step[1].vehicle.mass", "did you mean 'mass_kg'"]),
    ("vehicle mass negative", DRIVE + "vehicle = { mass_kg = -1500 }\n", {"cycle.csv": CYCLE},
     ["step[1].vehicle.mass_kg", "> 0"]),
    ("vehicle value a string", DRIVE + "vehicle = { mass_kg = 'heavy' }\n", {"cycle.csv": CYCLE},
     ["step[1].vehicle.mass_kg", "finite number"]),
    ("vehicle efficiency above 1", DRIVE + "vehicle = { drivetrain_efficiency = 1.2 }\n", {"cycle.csv": CYCLE},
     ["step[1].vehicle.drivetrain_efficiency", "<= 1"]),
    ("vehicle not a table", DRIVE + "vehicle = 3\n", {"cycle.csv": CYCLE}, ["step[1].vehicle", "a table"]),
    ("cycle misspelt", _sw('cycle = "cycle.csv"', 'cycle = "uds"', DRIVE), {},
     [f"scen.toml:{DRIVE_LINE}:", "step[1].cycle", "did you mean 'udds'"]),
    ("cycle /dev/zero", _sw('cycle = "cycle.csv"', 'cycle = "/dev/zero"', DRIVE), {},
     ["step[1].cycle", "/dev/zero", "a device"]),
    ("cycle a directory", _sw('cycle = "cycle.csv"', 'cycle = "{d}"', DRIVE), {},
     ["step[1].cycle", "a directory"]),
    ("cycle a huge file", DRIVE, {"cycle.csv": 65 * 1024 * 1024}, ["step[1].cycle", "cycle.csv", "bytes"]),
    ("cycle any file on the machine", _sw('cycle = "cycle.csv"', 'cycle = "{d}/secret.txt"', DRIVE),
     {"secret.txt": SECRET + "\n"}, ["step[1].cycle", "secret.txt:1:", "time_s,speed_mps"]),
    ("cycle row not numbers", DRIVE, {"cycle.csv": "time_s,speed_mps\n0,0\n1," + SECRET + "\n"},
     ["step[1].cycle", "cycle.csv:3:", "two numbers"]),
    ("cycle relative to the working folder", _sw('cycle = "cycle.csv"', 'cycle = "elsewhere.csv"', DRIVE), {},
     ["step[1].cycle", "beside the scenario", "{d}/elsewhere.csv"]),
    ("cycle time going back", DRIVE, {"cycle.csv": "time_s,speed_mps\n0,0\n2,1\n1,0\n"},
     ["step[1].cycle", "cycle.csv:4:", "must increase"]),
    # faults: triggers, and the cells, channels and contactors of the pack they aim at
    ("when with a cut number", BASE + SENSOR + "when = 'soc_true < 1e'\n", {},
     [f"scen.toml:{END + 5}:", "fault[0].when", "'soc_true < 1e'"]),
    ("when with an unknown signal", BASE + SENSOR + "when = 'soc_tru < 0.5'\n", {},
     ["fault[0].when", "did you mean 'soc_true'"]),
    ("both at_s and when", BASE + SENSOR + "at_s = 1.0\nwhen = 'soc_true < 0.5'\n", {},
     ["fault[0]", "exactly one of at_s"]),
    ("at_s negative", BASE + SENSOR + "at_s = -5.0\n", {}, [f"scen.toml:{END + 5}:", "fault[0].at_s", ">= 0"]),
    ("cleared before it is set", BASE + SENSOR + "at_s = 5.0\nclear_at_s = 1.0\n", {},
     [f"scen.toml:{END + 6}:", "fault[0].clear_at_s", "after at_s"]),
    ("sensor misspelt", BASE + SENSOR.replace("'cell_voltage'", "'cell_volt'") + "at_s = 0.5\n", {},
     [f"scen.toml:{END + 2}:", "fault[0].sensor", "did you mean 'cell_voltage'"]),
    ("cell-voltage channel beyond the pack", BASE + SENSOR.replace("index = 3", "index = 192") + "at_s = 0.5\n",
     {}, [f"scen.toml:{END + 3}:", "fault[0].index", "0 ... 191"]),
    ("temperature channel beyond the pack",
     BASE + SENSOR.replace("'cell_voltage'", "'temperature'").replace("3", "24") + "at_s = 0.5\n", {},
     ["fault[0].index", "0 ... 23"]),
    ("channel beyond a pack file's",
     _with_pack() + SENSOR.replace("index = 3", "index = 16") + "at_s = 0.5\n", {"pack.toml": PACK},
     ["fault[0].index", "0 ... 15"]),
    ("sensor fault misspelt", BASE + SENSOR.replace("'open_wire'", "'openwire'") + "at_s = 0.5\n", {},
     ["fault[0].fault", "did you mean 'open_wire'"]),
    ("stuck without a value", BASE + SENSOR.replace("'open_wire'", "'stuck'") + "at_s = 0.5\n", {},
     ["fault[0].value", "missing"]),
    ("internal short beyond the cells", BASE + "[[fault]]\nkind = 'internal_short'\ncell = 384\n"
                                              "resistance_ohm = 1.0\nat_s = 0.5\n", {},
     [f"scen.toml:{END + 2}:", "fault[0].cell", "0 ... 383"]),
    ("internal short of no resistance", BASE + "[[fault]]\nkind = 'internal_short'\ncell = 1\n"
                                               "resistance_ohm = 0.0\nat_s = 0.5\n", {},
     ["fault[0].resistance_ohm", "> 0 ohm"]),
    ("stack cells a word", BASE + "[[fault]]\nkind = 'stack_pressure'\npressure_MPa = 1.0\ncells = 'some'\n"
                                  "at_s = 0.5\n", {}, ["fault[0].cells", "\"all\" or a list"]),
    ("stack cells beyond the pack", BASE + "[[fault]]\nkind = 'stack_pressure'\npressure_MPa = 1.0\n"
                                           "cells = [1000]\nat_s = 0.5\n", {}, ["fault[0].cells", "0 ... 383"]),
    ("contactor misspelt", BASE + "[[fault]]\nkind = 'contactor_weld'\ncontactor = 'main_positiv'\nat_s = 0.5\n",
     {}, ["fault[0].contactor", "'main_positive'"]),
    ("cooling factor negative", BASE + "[[fault]]\nkind = 'coolant_loss'\ncooling_factor = -1.0\nat_s = 0.5\n", {},
     ["fault[0].cooling_factor", "[0, 1]"]),
    ("corruption unknown", BASE + "[[fault]]\nkind = 'can_corrupt'\nwhat = 'crcs'\nat_s = 0.5\n", {},
     [f"scen.toml:{END + 2}:", "fault[0].what", "did you mean 'crc'"]),
    ("fault kind misspelt", BASE + "[[fault]]\nkind = 'bus_of'\nat_s = 0.5\n", {},
     ["fault[0].kind", "did you mean 'bus_off'"]),
    ("bus-off recovery of no time", BASE + "[[fault]]\nkind = 'bus_off'\nrecovery_s = 0.0\nat_s = 0.5\n", {},
     [f"scen.toml:{END + 2}:", "fault[0].recovery_s", "a time > 0 s"]),
    ("fault after the last step", BASE + SENSOR + "at_s = 5.0\n", {},
     [f"scen.toml:{END + 5}:", "fault[0].at_s", "after the end of the steps (t = 1 s)", "never be injected"]),
    ("two faults of one name", BASE + SENSOR + "name = 'f'\nat_s = 0.5\n" + SENSOR + "name = 'f'\nat_s = 0.6\n",
     {}, [f"scen.toml:{END + 12}:", "fault[1].name", "a second fault named 'f'"]),
    # expectations that could never hold
    ("bound min above max", BASE + "[[expect]]\nkind = 'bound'\nsignal = 'soc_true'\nmin = 1.0\nmax = 0.0\n", {},
     [f"scen.toml:{END + 4}:", "expect[0].max", "max >= min"]),
    ("bound signal misspelt", BASE + "[[expect]]\nkind = 'bound'\nsignal = 'soc_tru'\nmax = 1.0\n", {},
     ["expect[0].signal", "did you mean 'soc_true'"]),
    ("trigger names no fault", BASE + "[[expect]]\nkind = 'event'\nevent = 'state:FAULT'\nafter = 'inject:nothing'\n",
     {}, [f"scen.toml:{END + 3}:", "expect[0].after", "no fault named 'nothing'"]),
    ("fault level misspelt", BASE + "[[expect]]\nkind = 'event'\nevent = 'fault:*'\nlevel = 'EROR'\n", {},
     ["expect[0].level", "did you mean 'ERROR'"]),
    ("within_s negative", BASE + "[[expect]]\nkind = 'event'\nevent = 'state:FAULT'\nwithin_s = -1.0\n", {},
     ["expect[0].within_s", "> 0"]),
    ("accuracy limit negative", BASE + "[[expect]]\nkind = 'accuracy'\nquantity = 'soc'\nrms_max = -0.1\n", {},
     ["expect[0].rms_max", ">= 0"]),
    ("cycle time of a message the BMS never sends",
     BASE + "[[expect]]\nkind = 'cycle_time'\nmessage = 'BMS_Statu'\n", {},
     [f"scen.toml:{END + 2}:", "expect[0].message", "did you mean 'BMS_Status'"]),
    ("window after the last step", BASE + "[[expect]]\nkind = 'accuracy'\nquantity = 'soc'\nafter_s = 60.0\n", {},
     [f"scen.toml:{END + 3}:", "expect[0].after_s", "no sample could ever be checked"]),
    ("DTC unknown", BASE + "[[expect]]\nkind = 'dtc'\ndtc = 'CELL_OVERVOLTAG'\nstatus = 'confirmed'\n", {},
     ["expect[0].dtc", "CELL_OVERVOLTAGE"]),
    # ambient, BMS configuration, diagnostics
    ("ambient beyond the model", BASE + "[ambient]\ntemp_C = -500.0\n", {},
     [f"scen.toml:{END + 1}:", "ambient.temp_C", "(-60, 120)"]),
    ("ambient profile going back", BASE + "[ambient]\ntemp_C = [[0, 20.0], [0, 25.0]]\n", {},
     ["ambient.temp_C", "must increase"]),
    ("ambient not a table", "ambient = 5\n" + BASE, {}, ["scen.toml:1:", "ambient", "a [ambient] table"]),
    ("BMS key misspelt", BASE + "[bms]\nvcu_timeout = 0.2\n", {}, [f"scen.toml:{END + 1}:", "bms.vcu_timeout"]),
    ("BMS value negative", BASE + "[bms]\nvcu_timeout_s = -1.0\n", {},
     [f"scen.toml:{END + 1}:", "bms.vcu_timeout_s", "> 0"]),
    ("diagnostic identifier beyond 16 bits", BASE + "[[diag]]\nat_s = 1.0\nrequest = 'read_did'\ndid = 99999999\n",
     {}, [f"scen.toml:{END + 3}:", "diag[0].did", "0xFFFF"]),
    ("diagnostic request after the last step", BASE + "[[diag]]\nat_s = 9.0\nrequest = 'tester_present'\n", {},
     [f"scen.toml:{END + 1}:", "diag[0].at_s", "never be sent"]),
    ("diagnostic payload not hex", BASE + "[[diag]]\nat_s = 1.0\nrequest = 'raw'\npayload = 'hello'\n", {},
     ["diag[0].payload", "hexadecimal"]),
    # the pack: a preset name, a parameter file beside the scenario, overrides
    ("pack preset misspelt", _sw("seed = 1", 'seed = 1\npack = "assb61-192s2p"'), {},
     ["scen.toml:4:", "scenario.pack", "did you mean 'assb60-192s2p'"]),
    ("pack file missing", _with_pack(), {}, ["scen.toml:4:", "scenario.pack", "{d}/pack.toml", "no such file"]),
    ("override key misspelt", BASE + "[pack_overrides]\ncell = { capacity_A = 50.0 }\n", {},
     [f"scen.toml:{END + 1}:", "pack_overrides.cell.capacity_A", "did you mean 'capacity_Ah'"]),
    ("override negative", BASE + "[pack_overrides.cell]\ncapacity_Ah = -50.0\n", {},
     [f"scen.toml:{END + 1}:", "pack_overrides.cell.capacity_Ah", "> 0"]),
    ("override a list for a table", BASE + "[pack_overrides]\ncell = [1, 2]\n", {},
     ["pack_overrides.cell", "a [cell] table"]),
    ("override of a hundred million cells", BASE + "[pack_overrides]\npack = { n_series = 100000000, "
                                                   "n_modules = 1 }\n", {},
     ["pack_overrides.pack.n_series", "100,000 cells"]),
    ("override breaking a cross-check", BASE + "[pack_overrides]\npack = { n_modules = 7 }\n", {},
     ["pack_overrides.pack.n_modules", "a divisor of n_series"]),
    # the parameter file itself: errors name it, its line and key
    ("parameter key misspelt", _with_pack(), _pack("n_parallel = 1", "n_paralel = 1"),
     ["pack.toml:4:", "pack.n_paralel", "did you mean 'n_parallel'"]),
    ("parameter negative", _with_pack(), _pack("link_capacitance_F = 0.0015", "link_capacitance_F = -1.0"),
     ["pack.toml:6:", "pack.link_capacitance_F", "> 0"]),
    ("parameter missing", _with_pack(), _pack("balancing_resistance_ohm = 33.0\n", ""),
     ["pack.toml", "pack.balancing_resistance_ohm", "missing"]),
    ("parameter a string", _with_pack(), _pack("n_series = 16", 'n_series = "16"'),
     ["pack.toml:3:", "pack.n_series", "integer >= 1"]),
    ("parameter table misspelt", _with_pack(), {"pack.toml": PACK + "[sensor]\ncurrent_noise_A = 0.1\n"},
     ["pack.toml", "sensor", "did you mean [sensors]"]),
    ("parameter cell preset unknown", _with_pack(), _pack('cell = "assb60"', 'cell = "assb6"'),
     ["pack.toml:2:", "pack.cell", "did you mean 'assb60'"]),
    ("parameter modules not dividing", _with_pack(), _pack("n_modules = 1", "n_modules = 5"),
     ["pack.toml:5:", "pack.n_modules", "a divisor of n_series"]),
    ("parameter cell table bad", _with_pack(), {"pack.toml": PACK + "[cell]\nocv_V = [3.0, 2.0]\n"},
     ["pack.toml", "cell.ocv_V", "strictly increasing"]),
    ("parameter activation energy in mJ/mol", _with_pack(),
     {"pack.toml": PACK + "[cell]\nr0_activation_J_per_mol = 3.5e7\n"},
     ["pack.toml", "cell.r0_activation_J_per_mol", "[0, 500,000] J/mol"]),
    ("parameter sensor noise absurd", _with_pack(), {"pack.toml": PACK.replace("temperature_noise_K = 0.05",
                                                                             "temperature_noise_K = 1e300")},
     ["pack.toml:", "sensors.temperature_noise_K", "[0, 50] K"]),
    ("parameter spread of 200 %", _with_pack(), {"pack.toml": PACK.replace("capacity_rel_sigma = 0.01",
                                                                          "capacity_rel_sigma = 2.0")},
     ["pack.toml:", "spread.capacity_rel_sigma", "[0, 0.5]"]),
    ("parameter file not TOML", _with_pack(), {"pack.toml": PACK + "[cell\n"}, ["pack.toml", "valid TOML"]),
    ("parameter file nested too deeply", _with_pack(), {"pack.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"},
     ["pack.toml", "nested too deeply"]),
    ("parameter file a device", _sw("seed = 1", 'seed = 1\npack = "/dev/zero"'), {},
     ["scenario.pack", "/dev/zero", "a device"]),
    ("parameter file a directory", _sw("seed = 1", 'seed = 1\npack = "{d}/sub/"'), {"sub/x": ""},
     ["scenario.pack", "a directory"]),
    ("parameter file huge", _with_pack(), {"pack.toml": 5 * 1024 * 1024}, ["scenario.pack", "pack.toml", "bytes"]),
    # [firmware] tables: the slot, its files, its DBC (read before the first tick)
    ("firmware role misspelt", _firmware("role = 'bmss'\nkind = 'library'\npath = 'x.so'\n"), {},
     [f"scen.toml:{END + 2}:", "firmware.role", "did you mean 'bms'"]),
    ("firmware kind misspelt", _firmware("role = 'vcu'\nkind = 'libary'\npath = 'x.so'\n"), {},
     ["firmware.kind", "did you mean 'library'"]),
    ("firmware without a path", _firmware("role = 'vcu'\nkind = 'library'\n"), {}, ["firmware.path", "missing"]),
    ("firmware library missing", _firmware("role = 'vcu'\nkind = 'library'\npath = 'libnone.so'\n"), {},
     [f"scen.toml:{END + 4}:", "firmware.path", "{d}/libnone.so"]),
    ("firmware library not a library", _firmware("role = 'vcu'\nkind = 'library'\npath = 'libbad.so'\n"),
     {"libbad.so": "\x7fELF not really\n"}, ["libbad.so", "cannot load the library"]),
    ("firmware program missing", _firmware("role = 'vcu'\nkind = 'process'\npath = '/nonexistent/vcu --x'\n"), {},
     [f"scen.toml:{END + 4}:", "firmware.path", "no such program", "/nonexistent/vcu"]),
    ("firmware deadline zero", _firmware("role = 'vcu'\nkind = 'process'\npath = 'true'\ntimeout_s = 0.0\n"), {},
     ["firmware.timeout_s", "> 0 s"]),
    ("firmware FMU as the BMS", _firmware("role = 'bms'\nkind = 'fmu'\npath = 'x.fmu'\n"), {"x.fmu": "x"},
     ["firmware.kind", "VCU slot"]),
    ("firmware differential of a VCU", _firmware("role = 'vcu'\nkind = 'process'\npath = 'true'\n"
                                                 "[firmware.differential]\nsoc = 0.05\n"), {},
     ["firmware.differential", "role = 'bms'"]),
    ("firmware differential key misspelt", _firmware("role = 'bms'\nkind = 'process'\npath = 'true'\n"
                                                     "[firmware.differential]\nsocc = 0.05\n"), {},
     [f"scen.toml:{END + 6}:", "firmware.differential.socc", "did you mean 'soc'"]),
    ("firmware signal quantity unknown", _firmware("role = 'bms'\nkind = 'process'\npath = 'true'\n"
                                                   "dbc = 'fw.dbc'\n[firmware.signals]\nsocpct = 'A.B'\n"),
     {"fw.dbc": ""}, [f"scen.toml:{END + 7}:", "firmware.signals.socpct", "did you mean 'soc_pct'"]),
    ("firmware signal without its message", _firmware("role = 'bms'\nkind = 'process'\npath = 'true'\n"
                                                      "dbc = 'fw.dbc'\n[firmware.signals]\nstate = 'State'\n"),
     {"fw.dbc": ""}, ["firmware.signals.state", "'Message.Signal'"]),
    ("firmware signals without a DBC", _firmware("role = 'bms'\nkind = 'process'\npath = 'true'\n"
                                                 "[firmware.signals]\nstate = 'A.B'\n"), {},
     ["firmware.dbc", "missing"]),
    ("firmware DBC missing", _firmware("role = 'bms'\nkind = 'process'\npath = 'true'\ndbc = 'none.dbc'\n"), {},
     [f"scen.toml:{END + 5}:", "firmware.dbc", "{d}/none.dbc"]),
]

FW_DBC = 'VERSION ""\nBO_ 256 FW_Status: 8 BMS\n SG_ State : 0|8@1+ (1,0) [0|255] "" VCU\n'
SIGNALS = "role = 'bms'\nkind = 'process'\npath = 'true'\ndbc = 'fw.dbc'\n[firmware.signals]\nstate = '{}'\n"
# DBC files: the firmware's own (through a scenario) and serve --dbc
DBCS = [
    ("firmware DBC without the message", _firmware(SIGNALS.format("FW_Stat.State")), {"fw.dbc": FW_DBC},
     [f"scen.toml:{END + 7}:", "firmware.signals.state", "fw.dbc", "no message 'FW_Stat'"]),
    ("firmware DBC without the signal", _firmware(SIGNALS.format("FW_Status.Mode")), {"fw.dbc": FW_DBC},
     ["firmware.signals.state", "fw.dbc", "no signal 'Mode'"]),
    ("firmware DBC not a DBC", _firmware(SIGNALS.format("FW_Status.State")), {"fw.dbc": "\x01" + SECRET},
     [f"scen.toml:{END + 5}:", "firmware.dbc", "fw.dbc", "cannot read the firmware's DBC"]),
    ("firmware DBC a device", _firmware(SIGNALS.format("FW_Status.State").replace("'fw.dbc'", "'/dev/zero'")), {},
     ["firmware.dbc", "/dev/zero", "a device"]),
    ("firmware DBC huge", _firmware(SIGNALS.format("FW_Status.State")), {"fw.dbc": 65 * 1024 * 1024},
     ["firmware.dbc", "fw.dbc", "bytes"]),
    ("firmware DBC frame ID beyond 11 bits", _firmware(SIGNALS.format("FW_Status.State")),
     {"fw.dbc": FW_DBC.replace("BO_ 256", "BO_ 99999999")}, ["firmware.dbc", "fw.dbc", "more than 11 bits"]),
    ("serve DBC not a DBC", ["serve", "--lockstep", "--duration", "0.1", "--dbc", "{d}/x.dbc"],
     {"x.dbc": "\x01" + SECRET}, ["x.dbc", "not a usable DBC", "line 1, column 1"]),
    ("serve DBC missing", ["serve", "--lockstep", "--duration", "0.1", "--dbc", "{d}/none.dbc"], {},
     ["none.dbc", "no such file"]),
    ("serve DBC a device", ["serve", "--lockstep", "--duration", "0.1", "--dbc", "/dev/zero"], {},
     ["/dev/zero", "a device"]),
    ("serve DBC a directory", ["serve", "--lockstep", "--duration", "0.1", "--dbc", "{d}"], {}, ["a directory"]),
    ("serve DBC not UTF-8", ["serve", "--lockstep", "--duration", "0.1", "--dbc", "{d}/x.dbc"],
     {"x.dbc": b'VERSION "\xff"\n'}, ["x.dbc:1", "not UTF-8"]),
    ("serve negative seed", ["serve", "--lockstep", "--duration", "0.1", "--seed", "-1"], {}, ["seed", "integer >= 0"]),
    ("serve pack file broken", ["serve", "--lockstep", "--duration", "0.1", "--pack", "{d}/pack.toml"],
     _pack("n_modules = 1", "n_modules = 0"), ["pack.toml:5:", "pack.n_modules", "integer >= 1"]),
]
SERVE = ["serve", "--lockstep", "--duration", "0.1"]
# other files serve reads: the DID table and the diagnostic memory
SERVE_FILES = [
    ("serve DID table a device", SERVE + ["--dids", "/dev/zero"], {}, ["/dev/zero", "file", "a device"]),
    ("serve DID table nested too deeply", SERVE + ["--dids", "{d}/dids.toml"],
     {"dids.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"}, ["dids.toml", "nested too deeply"]),
    ("serve diagnostic memory a device", SERVE + ["--diag-memory", "/dev/zero"], {}, ["/dev/zero", "a device"]),
    ("serve diagnostic memory nested too deeply", SERVE + ["--diag-memory", "{d}/nvm.json"],
     {"nvm.json": "[" * 100000 + "]" * 100000}, ["nvm.json", "not a diagnostic memory file"]),
]
REPLAY = ["replay", "{d}/drive.blf", "--dbc", str(example_path().parent / "vehicle.dbc"), "--map"]
# replay mappings that would exhaust memory (the rest: tests/test_replay_bad_inputs.py)
MAPPINGS = [
    ("mapping /dev/zero", REPLAY + ["/dev/zero"], {}, ["/dev/zero", "a device"]),
    ("mapping nested too deeply", REPLAY + ["{d}/map.toml"], {"map.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"},
     ["map.toml", "nested too deeply"]),
]
CASES = SCENARIOS + DBCS + SERVE_FILES + MAPPINGS


def _write(folder, files):
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):            # a file of this many bytes, sparse: its size alone is refused
            with open(path, "wb") as handle:
                handle.truncate(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{d}", str(folder)), encoding="utf-8")


@pytest.mark.parametrize("name, text, files, expected", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_input_exits_2_naming_file_and_key(tmp_path, capsys, name, text, files, expected):
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder, files)
    out = tmp_path / "out"
    if isinstance(text, list):
        argv = [a.replace("{d}", str(folder)) for a in text]
        argv += ["--json", str(out / "serve.json")] if argv[0] == "serve" else ["--out", str(out), "--no-plots"]
    else:
        if text is not None:
            (folder / "scen.toml").write_text(text.replace("{d}", str(folder)), encoding="utf-8")
        argv = ["run", str(folder / "scen.toml"), "--out", str(out), "--no-plots", "--no-progress"]
    status = main(argv)
    captured = capsys.readouterr()
    error = captured.err
    assert status == 2, captured.out + error
    assert "Traceback" not in error and captured.out == "", captured.out + error
    assert error.startswith("bms-emu: error: ") and error.count("\n") == 1, error   # one line, one paragraph
    for part in expected:
        assert part.replace("{d}", str(folder)) in error, (part, error)
    assert SECRET not in error and "do-not-print-me" not in error
    for summary in ("summary.json", "serve.json"):         # nothing that could read as a pass
        path = out / summary
        assert not path.exists() or json.loads(path.read_text()).get("passed") is not True


def test_at_least_fifty_malformed_inputs_across_the_formats():
    assert len(CASES) >= 50
    assert sum("pack.toml" in str(c[2]) or "pack" in c[0] for c in CASES) >= 10
    assert sum("DBC" in c[0] for c in CASES) >= 10


def test_a_cycle_resolves_beside_the_scenario_not_the_working_folder(tmp_path, monkeypatch):
    from hil.load import LoadProgram
    from hil.scenario import load_scenario
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "cycle.csv").write_text(CYCLE)
    (tmp_path / "cycle.csv").write_text("time_s,speed_mps\n0,0\n100,5\n")   # a different one in the working folder
    scenario_file = tmp_path / "scenarios" / "s.toml"
    scenario_file.write_text(DRIVE)
    monkeypatch.chdir(tmp_path)
    scenario = load_scenario(os.path.relpath(scenario_file))
    program = LoadProgram(scenario)
    assert program.planned_duration_s() == pytest.approx(1.0 + 2.0)   # the rest, then the 2 s cycle beside it


def test_a_long_run_is_allowed_explicitly(tmp_path):
    from hil.scenario import parse_scenario
    long_rest = _sw("duration_s = 1.0", "duration_s = 200000.0")         # 55.6 h, 20 M ticks
    with pytest.raises(Exception, match="max_ticks"):
        parse_scenario(long_rest, str(tmp_path / "s.toml"))
    scenario = parse_scenario(_sw("seed = 1", "seed = 1\nmax_ticks = 20000100", long_rest), str(tmp_path / "s.toml"))
    assert scenario.steps[0].options["duration_s"] == 200000.0


@pytest.mark.parametrize("command", ["run", "replay"])
def test_a_refused_input_removes_an_earlier_runs_verdict(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json", "replay.json"):
        (out / name).write_text(json.dumps({"passed": True}))
    (out / "junit.xml").write_text('<testsuite tests="1" failures="0"/>')
    (tmp_path / "scen.toml").write_text(_sw("seed = 1", "seed = -1"))
    argv = (["run", str(tmp_path / "scen.toml")] if command == "run"
            else REPLAY[:-1] + ["--map", "/dev/zero"])
    assert main([a.replace("{d}", str(tmp_path)) for a in argv] + ["--out", str(out), "--no-plots"]) == 2
    assert "bms-emu: error: " in capsys.readouterr().err
    verdicts = ("summary.json", "junit.xml") + (("replay.json",) if command == "replay" else ())
    assert not any((out / name).exists() for name in verdicts)


VALUES = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=6), st.booleans(), st.lists(st.integers(-5, 500), max_size=3),
                   st.lists(st.lists(st.floats(-100, 1000), min_size=2, max_size=2), max_size=2), st.just({}))


@given(data=st.data())
def test_any_value_in_any_key_of_a_builtin_scenario_is_refused_or_runs(data, tmp_path_factory):
    """A built-in scenario with one value swapped for anything: refused with a BmsError, or accepted, and then
    its emulator builds and each of its faults goes on and off (what a run would reach hours in)."""
    import tomli_w
    import tomllib

    from bms.errors import BmsError
    from hil.load import LoadProgram
    from hil.runner import _FaultTimeline, build_emulator
    from hil.scenario import builtin_scenarios, parse_scenario
    from hil.vcu import VcuModel

    name = data.draw(st.sampled_from(sorted(builtin_scenarios())))
    text = (Path(__import__("hil").__file__).parent / "scenarios" / f"{name}.toml").read_text(encoding="utf-8")
    scenario_data = tomllib.loads(text)
    places = [(top, None, key) for top, table in scenario_data.items() if isinstance(table, dict) for key in table]
    places += [(top, i, key) for top, tables in scenario_data.items() if isinstance(tables, list)
               for i, table in enumerate(tables) for key in table]
    top, i, key = data.draw(st.sampled_from(places))
    (scenario_data[top] if i is None else scenario_data[top][i])[key] = data.draw(VALUES)
    try:
        scenario = parse_scenario(tomli_w.dumps(scenario_data), str(tmp_path_factory.getbasetemp() / f"{name}.toml"))
        LoadProgram(scenario)
        emulator = build_emulator(scenario)
        timeline = _FaultTimeline(scenario, emulator, VcuModel(emulator.bms, period_s=0.01), can=object())
        for fault in scenario.faults:
            if fault.kind in ("sensor", "internal_short", "stack_pressure", "contactor_weld", "coolant_loss"):
                timeline._apply(fault, 1.0, on=True)
                timeline._apply(fault, 2.0, on=False)
    except BmsError as exc:
        assert str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("argv, expected", [
    (["run", "--max-sim-s", "-1"], "--max-sim-s -1: must be a number of seconds > 0"),
    (["run", "--max-sim-s", "inf"], "--max-sim-s inf: must be a number of seconds > 0"),
    (["serve", "--duration", "-1"], "--duration -1: must be a number of seconds > 0"),
    (["serve", "--lockstep", "--duration", "inf"], "--duration inf: must be a number of seconds > 0"),
    (["serve", "--lockstep", "--duration", "nan"], "--duration nan: must be a number of seconds > 0"),
    (["serve", "--lockstep", "--duration", "1", "--soc", "1.5"], "--soc: expected a state of charge in 0 ... 1"),
    (["serve", "--lockstep", "--duration", "1", "--temp", "nan"], "--temp: expected a temperature in (-60, 120)"),
    (["serve", "--lockstep", "--duration", "1", "--dt", "1e-9"], "--dt: expected a tick of 0.001 ... 0.1 s"),
    (["serve", "--rt-priority", "200"], "--rt-priority must be in 0..99"),
    (["serve", "--lockstep", "--duration", "1", "--diag-ids", "0x7E0"], "--diag-ids: expected REQ,RESP"),
])
def test_a_bad_argument_exits_2_as_documented(capsys, argv, expected):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bms-emu {argv[0]}: error: ") and expected in error and error.count("\n") == 1, error


@pytest.mark.parametrize("where, expected", [("file/r.json", "is a file, not a folder"), ("", "is a folder")])
def test_serve_refuses_a_json_report_it_could_not_write_before_it_runs(tmp_path, capsys, where, expected):
    """A --json that cannot be written was found only when the session ended (its report lost after hours on the
    bench): now before power-on, exit 2, nothing run."""
    (tmp_path / "file").write_text("")
    assert main(["serve", "--lockstep", "--duration", "1", "--json", str(tmp_path / where)]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err and "powered on" not in captured.out
    assert main(["serve", "--lockstep", "--duration", "0.05", "-q", "--json", str(tmp_path / "new" / "r.json")]) == 0
    assert json.loads((tmp_path / "new" / "r.json").read_text())["complete"] is True


@pytest.mark.parametrize("parse", ["sweep", "matrix map"])
def test_a_file_nested_too_deeply_is_refused_by_every_toml_parser(parse):
    """Every TOML input goes through one parser: a nesting too deep for tomllib's recursion is a clear error
    naming the file, never a RecursionError (the sweep file and the CAN-matrix map once lacked this)."""
    from hil.matrix.mapfile import parse_matrix_map
    from hil.scenario import ScenarioError
    from hil.sweep.sweepfile import parse_sweep
    text = "x = " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(ScenarioError, match="nested too deeply") as err:
        (parse_sweep if parse == "sweep" else parse_matrix_map)(text, "deep.toml")
    assert "deep.toml" in str(err.value)
