"""Which address a request is counted under: X-Forwarded-For only from trusted proxies, read
from the right; and the token buckets and caps the limits are made of."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings
from gateway.limits import KeyedCap, SessionCap, TokenBuckets
from gateway.client_address import ClientAddresses, parse_address
from gateway.metrics import Metrics


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    none = ClientAddresses()
    assert none.resolve("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"
    proxies = ClientAddresses(["10.0.0.0/8", "127.0.0.1"])
    assert proxies.resolve("198.51.100.7", ["203.0.113.1"]) == "198.51.100.7"  # not from a proxy
    assert proxies.resolve("127.0.0.1", ["203.0.113.1"]) == "203.0.113.1"
    assert proxies.resolve("127.0.0.1", []) == "127.0.0.1"  # a proxy without the header: itself


def test_the_rightmost_untrusted_hop_is_the_client():
    proxies = ClientAddresses(["10.0.0.0/8"])
    # the client wrote "6.6.6.6" itself; the edge proxy appended what it saw, the inner one too
    assert proxies.resolve("10.0.0.2", ["6.6.6.6, 203.0.113.9, 10.0.0.1"]) == "203.0.113.9"
    assert proxies.resolve("10.0.0.2", ["6.6.6.6", "203.0.113.9"]) == "203.0.113.9"  # repeated headers
    assert proxies.resolve("10.0.0.2", ["10.0.0.3, 10.0.0.1"]) == "10.0.0.3"  # all proxies: the farthest
    assert proxies.resolve("10.0.0.2", ["203.0.113.9, garbage"]) == "10.0.0.2"  # unparsable: stop there
    assert proxies.resolve("10.0.0.2", ["unknown"]) == "10.0.0.2"
    many = ", ".join(["10.0.0.9"] * 40)
    assert proxies.resolve("10.0.0.2", ["203.0.113.9, " + many]) == "10.0.0.9"  # bounded walk


def test_addresses_are_normalised_to_one_key_per_client():
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(parse_address("192.0.2.1:5678")) == "192.0.2.1"
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address(" 2001:DB8::1 ")) == "2001:db8::1"
    assert parse_address("proxy.example") is None and parse_address("") is None
    proxies = ClientAddresses(["::1"])
    assert proxies.resolve("::1", ["[2001:db8::5]:1234"]) == "2001:db8::5"


def test_trusted_proxies_setting_names_a_bad_entry():
    settings = load_settings(environ={}, overrides={"web": {"trusted_proxies": ["10.0.0.0/8", "::1"]}})
    assert settings.web.trusted_proxies == ("10.0.0.0/8", "::1")
    with pytest.raises(ConfigError, match="'proxy.local' is not an IP address"):
        load_settings(environ={}, overrides={"web": {"trusted_proxies": ["proxy.local"]}})


def test_token_buckets_burst_then_refill_per_key():
    now = [0.0]
    buckets = TokenBuckets(6, clock=lambda: now[0])  # 6 at once, then one every 10 s
    assert [buckets.take("a") for _ in range(7)] == [True] * 6 + [False]
    assert buckets.take("b")  # another key is untouched
    assert buckets.wait("a") == pytest.approx(10.0)
    now[0] = 5.0
    assert not buckets.take("a") and buckets.wait("a") == pytest.approx(5.0)
    now[0] = 10.0
    assert buckets.take("a") and not buckets.take("a")
    now[0] = 1000.0
    assert buckets.wait("a") == 0.0 and buckets.take("a")


def test_token_buckets_stay_bounded_in_memory():
    now = [0.0]
    buckets = TokenBuckets(60, clock=lambda: now[0], max_keys=100)
    for i in range(1000):
        buckets.take(f"k{i}")
        now[0] += 0.01
    assert len(buckets) <= 100


def test_session_caps_count_refusals_on_metrics():
    cap = SessionCap("audiosocket", 2)
    assert cap.admit() and cap.admit() and not cap.admit()
    metrics = Metrics()
    cap.register_metrics(metrics)
    assert not cap.admit()
    assert metrics.value("voicegw_sessions_refused_total", server="audiosocket") == 2
    assert 'voicegw_sessions_refused_total{server="audiosocket"} 2.0' in metrics.render()
    cap.release()
    assert cap.admit() and cap.active == 2
    per_key = KeyedCap(1)
    assert per_key.admit("a") and not per_key.admit("a") and per_key.admit("b")
    per_key.release("a")
    assert per_key.admit("a") and per_key.count("a") == 1
