"""The test harness every test module uses: one CLI runner, one policy builder, one
controllable clock, one stalling proxy. See tests/README.md for the rules."""

from tests.harness.cli import LifeboatCli, assert_no_crash
from tests.harness.clock import Clock
from tests.harness.policy import PolicyBuilder, toml_value
from tests.harness.wait import wait_until

__all__ = ["Clock", "LifeboatCli", "PolicyBuilder", "assert_no_crash", "toml_value", "wait_until"]
