"""Scenario files: malformed ones fail with file, line and key; the examples parse."""
import pytest

from hil.scenario import ScenarioError, builtin_scenarios, load_scenario, parse_scenario

GOOD = """
[scenario]
name = "t"
initial_soc = 0.8

[[step]]
kind = "drive"
cycle = "udds"

[[step]]
kind = "rest"
duration_s = 60.0

[[fault]]
kind = "sensor"
sensor = "cell_voltage"
index = 3
fault = "open_wire"
at_s = 10.0

[[expect]]
kind = "bound"
signal = "cell_voltage_max_V"
max = 4.25
"""


def test_good_scenario_parses():
    s = parse_scenario(GOOD, "good.toml")
    assert [step.kind for step in s.steps] == ["drive", "rest"]
    assert s.faults[0].at_s == 10.0 and s.faults[0].options["index"] == 3
    assert s.expectations[0].options["max"] == 4.25 and s.expectations[0].line == 21


@pytest.mark.parametrize("old,new,line,key,message", [
    ('kind = "rest"', 'kind = "rset"', 11, "step[1].kind", "did you mean 'rest'"),
    ("duration_s = 60.0", "duration_min = 1.0", 12, "step[1].duration_min", "did you mean 'duration_s'"),
    ("duration_s = 60.0", "duration_s = nan", 12, "step[1].duration_s", "finite"),
    ("duration_s = 60.0", 'duration_s = "60 s"', 12, "step[1].duration_s", "expected a number"),
    ('cycle = "udds"', 'cycle = "missing.csv"', 8, "step[0].cycle", "no built-in cycle or file"),
    ('cycle = "udds"', 'cycle = "uds"', 8, "step[0].cycle", "did you mean 'udds'"),
    ('signal = "cell_voltage_max_V"', 'signal = "cell_voltage_max_mV"', 23, "expect[0].signal", "did you mean"),
    ('fault = "open_wire"', 'fault = "openwire"', 18, "fault[0].fault", "did you mean 'open_wire'"),
    ("initial_soc = 0.8", "initial_soc = 80.0", 4, "scenario.initial_soc", "[0, 1]"),
    ("at_s = 10.0", 'when = "soc_tru < 0.5"', 19, "fault[0].when", "did you mean 'soc_true'"),
    ('kind = "sensor"\nsensor = "cell_voltage"\nindex = 3\nfault = "open_wire"', 'kind = "internal_short"', 14,
     "fault[0].cell", "missing (required for this kind) (also missing: resistance_ohm)"),
])
def test_malformed_scenarios_name_file_line_and_key(old, new, line, key, message):
    text = GOOD.replace(old, new)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.toml")
    error = info.value
    assert (error.source, error.line, error.key) == ("bad.toml", line, key), str(error)
    assert message in str(error) and str(error).startswith(f"bad.toml:{line}: {key}")


def test_unknown_table_and_bad_toml():
    with pytest.raises(ScenarioError, match="did you mean 'step'"):
        parse_scenario(GOOD + "\n[[stp]]\nkind = 'rest'\n", "bad.toml")
    with pytest.raises(ScenarioError, match=r"bad.toml:3: file: not valid TOML"):
        parse_scenario("[scenario]\nname = 't'\nx = \n", "bad.toml")
    with pytest.raises(ScenarioError, match="at least one"):
        parse_scenario("[scenario]\nname = 't'\n", "bad.toml")


def test_fault_needs_exactly_one_trigger():
    text = GOOD.replace("at_s = 10.0", "")
    with pytest.raises(ScenarioError, match="exactly one of at_s"):
        parse_scenario(text, "bad.toml")


def test_unknown_scenario_name_suggests(tmp_path):
    with pytest.raises(ScenarioError, match="did you mean 'default'"):
        load_scenario("defualt")


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_builtin_scenarios_parse(name):
    scenario = load_scenario(name)
    assert scenario.steps and scenario.expectations and scenario.description


def test_bms_overrides_are_validated(tmp_path):
    from hil.runner import build_emulator
    scenario = parse_scenario(GOOD + "\n[bms]\nvcu_timeout_s = 0.2\n", "ok.toml")
    assert build_emulator(scenario).bms.config.vcu_timeout_s == 0.2
    with pytest.raises(ScenarioError, match="bms.vcu_timeout"):
        build_emulator(parse_scenario(GOOD + "\n[bms]\nvcu_timeout = 0.2\n", "bad.toml"))


FRAMES = GOOD + """
[[frame]]
at_s = 12.5
message = "VCU_Command"
signals = { StateRequest = 1, ContactorRequest = 2 }
e2e = "wrong_crc"
"""


def test_frame_injections_parse():
    s = parse_scenario(FRAMES, "frames.toml")
    (frame,) = s.frames
    assert (frame.at_s, frame.message, frame.signals, frame.e2e, frame.line) == (
        12.5, "VCU_Command", {"StateRequest": 1, "ContactorRequest": 2}, "wrong_crc", 26)


@pytest.mark.parametrize("old,new,key,message", [
    ('message = "VCU_Command"', 'message = "VCU_Comand"', "frame[0].message", "did you mean 'VCU_Command'"),
    ("StateRequest = 1,", "StateReqest = 1,", "frame[0].signals.StateReqest", "did you mean 'StateRequest'"),
    ("StateRequest = 1,", "VCU_Command_CRC = 1,", "frame[0].signals.VCU_Command_CRC", "set by e2e"),
    ("StateRequest = 1,", 'StateRequest = "on",', "frame[0].signals.StateRequest", "a finite number"),
    ("StateRequest = 1,", "StateRequest = nan,", "frame[0].signals.StateRequest", "a finite number"),
    ("StateRequest = 1,", "StateRequest = 16,", "frame[0].signals.StateRequest",
     "16 does not fit the signal's 4 bits (unsigned, scale 1, offset 0): 0 … 15 can be sent"),
    ("StateRequest = 1,", "StateRequest = -1,", "frame[0].signals.StateRequest", "-1 does not fit"),
    ('e2e = "wrong_crc"', 'e2e = "bad_crc"', "frame[0].e2e", "expected one of valid, wrong_counter, wrong_crc"),
    ("at_s = 12.5", "at_s = -1.0", "frame[0].at_s", "expected a time >= 0 s"),
    ("at_s = 12.5", "", "frame[0].at_s", "missing"),
    ('message = "VCU_Command"\nsignals = { StateRequest = 1, ContactorRequest = 2 }',
     'message = "HIL_Load"\nsignals = { }', "frame[0].e2e", "HIL_Load carries no alive counter and CRC"),
])
def test_malformed_frame_injections_name_file_line_and_key(old, new, key, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(FRAMES.replace(old, new), "bad.toml")
    assert info.value.key == key and info.value.line is not None and message in str(info.value), str(info.value)


@pytest.mark.parametrize("mode,options,message", [
    ("headless", None, "need the BMS on a bus"),
    ("lockstep", {"matrix": "hil/matrix/examples/ev_fd_bms.toml"}, "a run on a vehicle CAN matrix"),
    ("paced", {"interface": "slcan", "channel": "/dev/null"}, "interface 'slcan' does not give"),
])
def test_frame_injections_are_refused_where_they_cannot_be_sent(mode, options, message):
    from hil.runner import run_scenario
    with pytest.raises(ScenarioError, match=message) as info:
        run_scenario(parse_scenario(FRAMES, "frames.toml"), mode=mode, plots=False, can_options=options)
    assert info.value.line == 26


NAMED_FAULT = GOOD.replace("[[fault]]\n", '[[fault]]\nname = "wire"\n') + """
[[expect]]
kind = "event"
event = "contactor:main_positive:open"
after = "inject:wire"
"""


@pytest.mark.parametrize("old,new,key,message", [
    ('event = "contactor:main_positive:open"', 'event = "fault:CELL_OVERVOLTAGE"', "expect[1].event",
     "'fault:CELL_OVERVOLTAGE:*' matches it at any level"),
    ('event = "contactor:main_positive:open"', 'event = "fault:CELL_OVERVOLTAGE:SEVERE"', "expect[1].event",
     "unknown fault level 'SEVERE'"),
    ('event = "contactor:main_positive:open"', 'event = "contactor:main_pos:open"', "expect[1].event",
     "did you mean 'main_positive'"),
    ('event = "contactor:main_positive:open"', 'event = "contactor:precharge:shut"', "expect[1].event",
     "contactor:NAME:open or contactor:NAME:closed"),
    ('after = "inject:wire"', 'after = "wire"', "expect[1].after", "the fault's injection is 'inject:wire'"),
    ('after = "inject:wire"', 'after = "fault:COMM_FAULT"', "expect[1].after", "fault:PROTECTION:LEVEL"),
    # a family no event has: absent = true would pass whatever happened
    ('event = "contactor:main_positive:open"', 'event = "warning:*"', "expect[1].event",
     "no event family 'warning'"),
    ('after = "inject:wire"', 'after = "falt:COMM_FAULT:ERROR"', "expect[1].after", "did you mean 'fault'"),
])
def test_event_patterns_that_can_match_no_event_are_refused_on_load(old, new, key, message):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(NAMED_FAULT.replace(old, new), "bad.toml")
    assert info.value.key == key and message in str(info.value), str(info.value)


@pytest.mark.parametrize("event", ["fault:*", "fault:latch:set", "fault:CELL_VOLTAGE_SENSOR:*", "uds:vin:positive",
                                   "contactor:*:open", "state:DRIVING", "fault:OWN_FIRMWARE_FAULT:ERROR", "charge",
                                   "diag:session:*", "dtc:*", "frame:*", "bench:inject:*", "precharge:complete",
                                   "*:open", "[fs]*"])
def test_event_patterns_of_any_family_and_firmware_names_parse(event):
    s = parse_scenario(NAMED_FAULT.replace('event = "contactor:main_positive:open"', f'event = "{event}"'), "ok.toml")
    assert s.expectations[1].options["event"] == event


@pytest.mark.parametrize("event,message", [("fault:OWN_FIRMWARE_FAULT:ERROR", "no protection 'OWN_FIRMWARE_FAULT'"),
                                           ("state:DRIVING", "no state 'DRIVING'")])
def test_a_run_of_the_built_in_bms_refuses_its_unknown_protection_and_state_names(event, message):
    from hil.runner import run_scenario
    from hil.scenario_checks import check_event_names

    s = parse_scenario(NAMED_FAULT.replace('event = "contactor:main_positive:open"', f'event = "{event}"'), "bad.toml")
    check_event_names(s, builtin_bms=False)  # a firmware in the BMS slot publishes names of its own
    with pytest.raises(ScenarioError, match=message) as info:
        run_scenario(s, out_dir=None, mode="headless", plots=False)
    assert info.value.key == "expect[1].event"
