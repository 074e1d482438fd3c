import pytest


@pytest.fixture(scope="session", autouse=True)
def no_resume_failures_left() -> None:
    """The test client's address starts with no wrong resume codes counted: Redis keeps them for
    the limiter's window (imbue.ratelimit), so runs close together would add up. A run itself
    tries only a few (the fuzz test forgets its own)."""
    from imbue import ratelimit

    ratelimit.forget_resume_failures(ip="127.0.0.1", session_key=None)
