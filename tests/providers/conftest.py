import pytest

from tests.providers.wire import WireServer


@pytest.fixture
async def server():
    """A loopback stand-in for the provider's service; tests set what it answers."""
    async with WireServer() as srv:
        yield srv
