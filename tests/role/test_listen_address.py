"""IPv6 listen addresses in the role: the one place that turns host and port into a URL
(filter_plugins/listen_address.py, the service's own torch_backend/listen_address.py), the
URLs the role's vars build with it, and the host-state read calling a real service on ::1.
"""
import importlib.util
import json

import pytest

from conftest import ROLE, load_role_module

spec = importlib.util.spec_from_file_location("pytorch_backend_filter_listen_address",
                                              ROLE / "filter_plugins" / "listen_address.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
FILTERS = plugin.FilterModule().filters()


# bind address -> where the verifier on the host reaches the service
LOCAL_URLS = {
    "127.0.0.1": "http://127.0.0.1:8080",
    "0.0.0.0": "http://127.0.0.1:8080",
    "localhost": "http://127.0.0.1:8080",
    "10.0.0.5": "http://10.0.0.5:8080",
    "api.internal.example": "http://api.internal.example:8080",
    "::1": "http://[::1]:8080",
    "::": "http://[::1]:8080",
    "0:0:0:0:0:0:0:0": "http://[::1]:8080",
    "2001:db8::5": "http://[2001:db8::5]:8080",
    "::ffff:10.0.0.5": "http://[::ffff:10.0.0.5]:8080",
}


@pytest.mark.parametrize("host,url", LOCAL_URLS.items())
def test_local_url_brackets_ipv6_and_reaches_wildcards_on_loopback(host, url):
    assert FILTERS["pytorch_backend_local_url"](host, 8080) == url
    assert FILTERS["pytorch_backend_local_url"](host, "8080") == url


GOOD = ["127.0.0.1", "0.0.0.0", "::1", "::", "2001:db8::5", "fe80::1", "::ffff:127.0.0.1",
        "1:2:3:4:5:6:7:8", "localhost", "api.internal.example", "host-1"]
BAD = {
    "[::1]": "has brackets",
    "[::1]:8080": "has brackets",
    "1::2::3": "is not a valid IPv6 address",
    ":::": "is not a valid IPv6 address",
    "1:2:3:4:5:6:7:8:9": "is not a valid IPv6 address",
    "2001:db8::g": "is not a valid IPv6 address",
    "12345::": "is not a valid IPv6 address",
    "::1:8080:": "is not a valid IPv6 address",
    "fe80::1%eth0": "zone index",
    "256.0.0.1": "is not a valid IPv4 address",
    "1.2.3": "is not a valid IPv4 address",
    "010.0.0.1": "is not a valid IPv4 address",
    "": "is empty",
    "host_name": "is not an IPv4 address, an IPv6 address",
    "-host": "is not an IPv4 address, an IPv6 address",
    "host.": "is not an IPv4 address, an IPv6 address",
    "127.0.0.1 ": "is not an IPv4 address, an IPv6 address",
    "::1\n": "is not a valid IPv6 address",
    "http://127.0.0.1": "is not a valid IPv6 address",
}


@pytest.mark.parametrize("host", GOOD)
def test_listen_problem_accepts_addresses_and_names(host):
    assert FILTERS["pytorch_backend_listen_problem"](host) == ""


@pytest.mark.parametrize("host,words", BAD.items())
def test_listen_problem_refuses_with_a_reason(host, words):
    assert words in FILTERS["pytorch_backend_listen_problem"](host)


@pytest.mark.parametrize("value", [None, 8080, ["::1"], {"host": "::1"}])
def test_listen_problem_refuses_what_is_not_a_string(value):
    assert "is empty or not a string" in FILTERS["pytorch_backend_listen_problem"](value)


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                           ("0:0:0:0:0:0:0:1", True), ("localhost", True),
                                           ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
                                           ("2001:db8::5", False), ("api.internal.example", False)])
def test_loopback(host, loopback):
    assert FILTERS["pytorch_backend_is_loopback"](host) is loopback


URLS_PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files:
    - ROLE/defaults/main.yml
    - ROLE/vars/main.yml
  tasks:
    - name: The role's URLs for each listen address
      ansible.builtin.set_fact:
        urls: "{{ urls | default({}) | combine({item: {'url': _pytorch_backend_url, 'candidate': _pytorch_backend_candidate_url}}) }}"
      vars:
        pytorch_backend_host: "{{ item }}"
      loop: HOSTS
    - name: Write them
      ansible.builtin.copy:
        content: "{{ urls | to_json }}"
        dest: DEST
        mode: "0600"
"""


def test_role_vars_build_bracketed_urls(playbook, tmp_path):
    """The URLs the verifier and the host-state read are given, templated by Ansible from vars/main.yml."""
    dest = tmp_path / "urls.json"
    play = (URLS_PLAY.replace("ROLE", str(ROLE)).replace("HOSTS", json.dumps(list(LOCAL_URLS)))
            .replace("DEST", str(dest)))
    result = playbook(play)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    urls = json.loads(dest.read_text())
    assert {host: u["url"] for host, u in urls.items()} == LOCAL_URLS
    assert {u["candidate"] for u in urls.values()} == {"http://127.0.0.1:8081"}


def host_state_served():
    """The host-state module's question to the running service (library/torch_backend_host.py,
    served()), as it runs on the host: imported from the module file itself."""
    return load_role_module("torch_backend_host").served


@pytest.mark.parametrize("bind", ["::1", "::"])
def test_host_state_read_asks_a_service_on_ipv6(ipv6_service, bind):
    """The service listens on ::1; a bind of :: is reached there too (on a host, :: includes ::1)."""
    url = FILTERS["pytorch_backend_local_url"](bind, ipv6_service)
    assert host_state_served()(url) == (True, "", "")


@pytest.mark.parametrize("host,stream", [("127.0.0.1", "127.0.0.1:8080"), ("::1", "[::1]:8080"), ("::", "[::]:8080"),
                                         ("0.0.0.0", "0.0.0.0:8080"), ("localhost", "127.0.0.1:8080"),
                                         ("0:0::1", "[::1]:8080"), ("backend.example.org", "")])
def test_socket_unit_listen_stream_names_an_address_or_nothing_for_a_host_name(host, stream):
    assert FILTERS["pytorch_backend_listen_stream"](host, 8080) == stream
