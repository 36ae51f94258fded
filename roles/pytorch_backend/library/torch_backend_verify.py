#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: torch_backend_verify
short_description: Check Conv2d inference through the running torch-backend service
description:
  - Waits until the service reports ready on C(/v2/health/ready), sends the given input to a model
    through the Open Inference Protocol, compares every output value with the expected values,
    measures the latency of a few requests, and counts NNPACK warning lines in the systemd journal
    of the service's current invocation (since its current start).
  - When O(expect_release) or O(expect_config_digest) is set, also compares them with the release and
    the configuration digest the running service reports on C(GET /v2) (both resolved once, when it
    started), so that a service not restarted after a switch of C(current) or a change of its
    configuration files is not reported as verified.
  - Never fails the task for a failed check; it returns O(verified) and the list of O(problems), so
    that the caller can decide (for example roll back).
version_added: "0.1.0"
author: torch-backend contributors
options:
  url:
    description:
      - Base URL of the service, for example C(http://127.0.0.1:8080) or, for IPv6, C(http://[::1]:8080).
      - An IPv6 address must be in brackets (RFC 3986); a URL that does not parse, such as C(http://::1:8080),
        fails the task at once.
    type: str
    required: true
  model:
    description: Model to send the input to.
    type: str
    default: conv2d-selftest
  input_name:
    description: Name of the model's input tensor.
    type: str
    default: input
  input:
    description: Input tensor as a nested list (batch first).
    type: raw
    required: true
  expected:
    description: Expected output values, flattened row-major.
    type: list
    elements: float
    required: true
  tolerance:
    description: Largest absolute difference accepted per value.
    type: float
    default: 0.0001
  requests:
    description: Requests whose latency is measured after the first, checked one.
    type: int
    default: 5
  ready_timeout:
    description:
      - Seconds to wait for readiness.
      - When O(unit) is set the wait ends early once systemd reports the unit failed, inactive or
        restarted after a crash, and the service's last error line is added to O(problems).
    type: int
    default: 600
  unit:
    description: systemd unit whose journal is searched; empty to skip the journal check.
    type: str
    default: torch-backend.service
  warning_pattern:
    description: Text whose presence in the journal fails the check.
    type: str
    default: Could not initialize NNPACK
  expect_release:
    description:
      - Release the service must be serving, normally the one C(current) points to.
      - When the service reports another one (or none) on C(GET /v2), the result is not verified and
        O(problems) gets "torch-backend serves release OLD, but current points to NEW (it was not
        restarted after the switch)", OLD being what the service reports (V(none) when it reports no
        release) and NEW this option.
      - Empty to skip this check.
    type: str
    default: ""
  expect_config_digest:
    description:
      - Configuration digest the service must have started with, normally the one computed from the files on disk.
      - When the service reports another one (or none) on C(GET /v2), the result is not verified and
        O(problems) gets "torch-backend started with configuration digest OLD, but the files on disk
        say NEW (it was not restarted after they changed)", OLD being what the service reports
        (V(none) when it reports no digest) and NEW this option.
      - Empty to skip this check.
    type: str
    default: ""
notes:
  - Supports check mode by doing nothing and reporting O(verified=null).
'''

EXAMPLES = r'''
- name: Verify the self-test model
  torch_backend_verify:
    url: http://127.0.0.1:8080
    input: "{{ 8 | pytorch_backend_selftest_input }}"
    expected: "{{ 8 | pytorch_backend_selftest_input | pytorch_backend_conv2d_reference }}"
  register: verify

- name: Verify that the service runs the release current points to, with the configuration on disk
  torch_backend_verify:
    url: http://127.0.0.1:8080
    input: "{{ 8 | pytorch_backend_selftest_input }}"
    expected: "{{ 8 | pytorch_backend_selftest_input | pytorch_backend_conv2d_reference }}"
    expect_release: 3f9c0a1b2d4e
    expect_config_digest: 9a8b7c6d5e4f3a2b
  register: verify
'''

RETURN = r'''
verified:
  description: Whether every check passed (null in check mode).
  returned: always
  type: bool
problems:
  description: What failed, one sentence each.
  returned: always
  type: list
  elements: str
ready_after:
  description: Seconds until the service reported ready.
  returned: always
  type: float
max_abs_error:
  description: Largest absolute difference between returned and expected values.
  returned: when an answer was received
  type: float
latency_ms:
  description: Latency of the measured requests (p50, max), in milliseconds.
  returned: when requests were answered
  type: dict
warning_lines:
  description: NNPACK warning lines in the journal of the current invocation.
  returned: when unit is set
  type: int
invocation_id:
  description: systemd InvocationID of the unit's current start.
  returned: when unit is set
  type: str
server:
  description: The server metadata from C(GET /v2).
  returned: when answered
  type: dict
served_release:
  description: The release the running service reports (resolved when it started); null when it reports none.
  returned: when C(GET /v2) answered
  type: str
served_config_digest:
  description: The configuration digest the running service started with; null when it reports none.
  returned: when C(GET /v2) answered
  type: str
'''

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import urlsplit
from ansible.module_utils.urls import open_url


def _url_problem(url):
    """Why `url` is not an http(s) base URL, or None. An IPv6 address without brackets is
    not one: its port cannot be told apart from it (http.client would split at the last
    colon and call something, or nothing, by accident)."""
    try:
        parts = urlsplit(url)
        parts.port  # parsed on access: raises ValueError for an unbracketed IPv6 address
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        return 'no http(s) scheme and host'
    return None


def _get_json(url, timeout=10):
    response = open_url(url, method='GET', timeout=timeout, validate_certs=False, use_proxy=False)
    return response.getcode(), json.loads(response.read() or b'null')


def _unit_state(module, unit):
    rc, out, _err = module.run_command(['systemctl', 'show', '--property=ActiveState,Result,NRestarts', unit],
                                       environ_update={'LC_ALL': 'C'})
    if rc != 0:
        return {}
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def _wait_ready(module, base, timeout, unit):
    """Poll readiness; give up early when systemd says the unit died, instead of waiting out the timeout."""
    start = time.monotonic()
    last = 'no answer'
    restarts = _unit_state(module, unit).get('NRestarts') if unit else None
    while time.monotonic() - start < timeout:
        try:
            code, _body = _get_json(base + '/v2/health/ready', timeout=5)
            if code == 200:
                return True, time.monotonic() - start, None
            last = 'HTTP %s' % code
        except Exception as exc:  # connection refused while starting, 503 while warming
            last = str(exc)
        if unit:
            state = _unit_state(module, unit)
            if state.get('ActiveState') in ('failed', 'inactive'):
                return False, time.monotonic() - start, '%s is %s (%s)' % (unit, state['ActiveState'], state.get('Result'))
            if restarts is not None and state.get('NRestarts', restarts) != restarts:
                return False, time.monotonic() - start, '%s exited during start and systemd restarted it (%s)' % (
                    unit, state.get('Result'))
        time.sleep(1)
    return False, time.monotonic() - start, last


def _shape(value):
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flatten(value):
    if isinstance(value, list):
        out = []
        for item in value:
            out.extend(_flatten(item))
        return out
    return [value]


def _infer(base, model, input_name, tensor):
    body = json.dumps({'inputs': [{'name': input_name, 'shape': _shape(tensor), 'datatype': 'FP32',
                                   'data': _flatten(tensor)}]}).encode()
    start = time.monotonic()
    response = open_url(base + '/v2/models/%s/infer' % model, method='POST', data=body, timeout=60,
                        headers={'Content-Type': 'application/json'}, use_proxy=False)
    answer = json.loads(response.read())
    return time.monotonic() - start, answer


def _journal(module, unit, pattern):
    rc, out, err = module.run_command(['systemctl', 'show', '--property=InvocationID', '--value', unit],
                                      environ_update={'LC_ALL': 'C'})
    invocation = out.strip()
    if rc != 0 or not invocation:
        return None, None, 'could not read the InvocationID of %s: %s' % (unit, (err or out).strip()), None
    rc, out, err = module.run_command(['journalctl', '--no-pager', '-o', 'cat', '_SYSTEMD_INVOCATION_ID=' + invocation],
                                      environ_update={'LC_ALL': 'C'})
    if rc != 0:
        return invocation, None, 'could not read the journal of %s: %s' % (unit, err.strip()), None
    lines = out.splitlines()
    errors = [line for line in lines if 'ERROR' in line or 'Traceback' in line]
    return invocation, sum(1 for line in lines if pattern in line), None, (errors or [None])[-1]


def _reported(server, key):
    value = server.get(key) if isinstance(server, dict) else None
    return value if isinstance(value, str) and value else None


def _compare_identity(result, server, expect_release, expect_config_digest):
    """Problems when the running service is not the expected release or configuration."""
    problems = []
    served_release = result['served_release'] = _reported(server, 'release')
    served_digest = result['served_config_digest'] = _reported(server, 'config_digest')
    if expect_release and served_release != expect_release:
        problems.append('torch-backend serves release %s, but current points to %s (it was not restarted after the switch)'
                        % (served_release or 'none', expect_release))
    if expect_config_digest and served_digest != expect_config_digest:
        problems.append('torch-backend started with configuration digest %s, but the files on disk say %s '
                        '(it was not restarted after they changed)' % (served_digest or 'none', expect_config_digest))
    return problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', required=True),
            model=dict(type='str', default='conv2d-selftest'),
            input_name=dict(type='str', default='input'),
            input=dict(type='raw', required=True),
            expected=dict(type='list', elements='float', required=True),
            tolerance=dict(type='float', default=0.0001),
            requests=dict(type='int', default=5),
            ready_timeout=dict(type='int', default=600),
            unit=dict(type='str', default='torch-backend.service'),
            warning_pattern=dict(type='str', default='Could not initialize NNPACK'),
            expect_release=dict(type='str', default=''),
            expect_config_digest=dict(type='str', default=''),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p['requests'] < 1 or p['ready_timeout'] < 1:
        module.fail_json(msg='requests and ready_timeout must be at least 1')
    url_problem = _url_problem(p['url'])
    if url_problem:
        module.fail_json(msg='url must be an http(s) URL with any IPv6 address in brackets, such as '
                             'http://[::1]:8080, got %r (%s)' % (p['url'], url_problem))
    result = dict(changed=False, verified=None, problems=[], ready_after=0.0)
    if module.check_mode:
        module.exit_json(**result)

    base = p['url'].rstrip('/')
    problems = result['problems']
    ready, waited, last = _wait_ready(module, base, p['ready_timeout'], p['unit'])
    result['ready_after'] = round(waited, 2)
    if not ready:
        problems.append('service not ready after %d s (%s)' % (waited, last))
    else:
        try:
            result['server'] = _get_json(base + '/v2')[1]
            problems.extend(_compare_identity(result, result['server'], p['expect_release'], p['expect_config_digest']))
            _elapsed, answer = _infer(base, p['model'], p['input_name'], p['input'])
            values = _flatten(answer['outputs'][0]['data'])
            expected = p['expected']
            if len(values) != len(expected):
                problems.append('%s returned %d values, expected %d' % (p['model'], len(values), len(expected)))
            else:
                error = max(abs(float(a) - float(b)) for a, b in zip(values, expected))
                result['max_abs_error'] = error
                if error > p['tolerance']:
                    problems.append('%s output differs from the controller reference by up to %g' % (p['model'], error))
            timings = sorted(_infer(base, p['model'], p['input_name'], p['input'])[0] for _ in range(p['requests']))
            result['latency_ms'] = dict(p50=round(timings[len(timings) // 2] * 1000, 2),
                                        max=round(timings[-1] * 1000, 2), requests=len(timings))
        except Exception as exc:
            problems.append('inference through %s failed: %s' % (base, exc))

    if p['unit']:
        invocation, lines, error, last_error = _journal(module, p['unit'], p['warning_pattern'])
        result['invocation_id'] = invocation
        result['warning_lines'] = lines
        if error:
            problems.append(error)
        elif not ready and last_error:
            problems.append('its last error: %s' % last_error.strip()[:300])
        elif lines:
            problems.append('%d "%s" lines in the journal since the service started' % (lines, p['warning_pattern']))

    result['verified'] = not problems
    module.exit_json(**result)


if __name__ == '__main__':
    main()
