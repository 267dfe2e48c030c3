"""Fixtures of the buffer tests (pytest finds fixtures here, not in the imported contract module)."""

from buffer_contract import start_thread  # noqa: F401 (a fixture: pytest looks it up by name)
