from __future__ import annotations

import pytest

from batch_proxy.errors import SettingsError
from batch_proxy.settings import ProxySettings, settings_from


def test_defaults() -> None:
    settings = settings_from([], {})
    assert settings == ProxySettings()
    assert settings.port == 8080
    assert (settings.max_batch_size, settings.max_wait_ms, settings.policy) == (32, 50, "adaptive")
    assert settings.max_inflight is None  # the policy's own: adaptive, concurrency + 1
    assert settings.upstream_concurrency is None  # from the upstream's health header
    assert settings.connection_pool_size > 1


def test_environment_then_flags() -> None:
    env = {
        "NEXUS_PROXY_UPSTREAMS": "http://a:1/, http://b:2",
        "NEXUS_PROXY_MAX_BATCH_SIZE": "16",
        "NEXUS_PROXY_POLICY": "eager",
        "NEXUS_PROXY_UPSTREAM_CONCURRENCY": "2",
        "NEXUS_PROXY_MAX_WAIT_MS": "10.5",
    }
    settings = settings_from(["--max-batch-size", "8", "--port", "9000"], env)
    assert settings.upstreams == ("http://a:1", "http://b:2")
    assert settings.max_batch_size == 8
    assert settings.policy == "eager"
    assert settings.upstream_concurrency == 2
    assert settings.max_wait_ms == 10.5
    assert settings.port == 9000
    assert settings_from(["--no-eager"], env).policy == "fixed"
    assert settings_from(["--policy", "adaptive"], env).policy == "adaptive"
    assert settings_from(["--upstream", "http://x/", "--upstream", "http://y"], {}).upstreams == (
        "http://x",
        "http://y",
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"NEXUS_PROXY_POLICY": "maybe"}, "POLICY must be one of adaptive, eager, fixed"),
        (["--policy", "lifo"], {}, "--policy must be one of adaptive, eager, fixed, not 'lifo'"),
        (["--upstream-concurrency", "0"], {}, "upstream_concurrency must be at least 1"),
        ([], {"NEXUS_PROXY_MAX_QUEUE": "lots"}, "must be a whole number"),
        (["--max-queue", "8"], {}, "must hold at least one full batch"),
        (["--max-inflight", "0"], {}, "max_inflight must be at least 1"),
        (["--max-wait-ms", "-1"], {}, "must not be negative"),
        (["--request-timeout-s", "0"], {}, "must be positive"),
        (["--upstream", "localhost:8000"], {}, "http:// or https://"),
        (["--upstream", "a b=http://x"], {}, "'a b' is not a model name"),
        (["--upstream", "resnet=x:8000"], {}, "http:// or https://"),
    ],
)
def test_bad_settings(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from(argv, env)


def test_upstreams_per_model_and_shared() -> None:
    argv = ["--upstream", "http://shared:8000/", "--upstream", "resnet=http://a:8000/"]
    argv += ["--upstream", "resnet=http://b:8000", "--upstream", "bert=https://c"]
    groups = settings_from(argv, {}).upstream_groups
    assert groups == {
        None: ("http://shared:8000",),
        "resnet": ("http://a:8000", "http://b:8000"),
        "bert": ("https://c",),
    }
    env = {"NEXUS_PROXY_UPSTREAMS": "bert=http://c, http://d"}
    assert settings_from([], env).upstream_groups == {"bert": ("http://c",), None: ("http://d",)}
