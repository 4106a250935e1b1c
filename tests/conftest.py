"""Test session setup: Hypothesis profiles and a header naming the tinygrad device in use."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=50, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=500, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header(config):
    from importlib.metadata import version

    from tinyref.devices import describe_device
    return [f"tinyref device: {describe_device()} (tinygrad {version('tinygrad')}); "
            f"Hypothesis profile: {os.environ.get('HYPOTHESIS_PROFILE', 'ci')}"]
