import os

from hypothesis import HealthCheck, settings

# A fixed profile: property tests explore the same number of cases locally and in CI (2 cores, bounded time).
settings.register_profile(
    "ring-async", max_examples=int(os.environ.get("RING_ASYNC_HYPOTHESIS_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ring-async")
