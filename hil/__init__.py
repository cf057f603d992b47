"""The scenario harness: drives, vehicle model, runner, reports, CLI."""
