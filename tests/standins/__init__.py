"""Real local stand-ins for the destinations, started by the tests as subprocesses."""

import pytest

# Test modules import helpers from here and load the fixtures with ``pytest_plugins``:
# registering first lets pytest rewrite their asserts without a warning.
pytest.register_assert_rewrite("tests.standins.object_stores", "tests.standins.pubsub")
