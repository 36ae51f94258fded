# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

DOCUMENTATION = r'''
name: fleet_report
type: aggregate
short_description: Print the per-host deploy table at the end of every run, whatever happened
description:
  - At the end of the run (also after a failing host stopped the rollout, when no later play runs) prints one
    row per target host with what happened to it, then the messages of the hosts that did not end C(served),
    then one count line. Enabled when ANSIBLE_CALLBACKS_ENABLED (or C(callbacks_enabled) in ansible.cfg) lists it.
  - "Reads the run-wide custom stats the pytorch_backend role sets with C(ansible.builtin.set_stats)
    (C(per_host: false), so that AWX and ansible-runner keep them as the job's artifacts):
    C(pytorch_backend_fleet), one row per host keyed by host name (host, outcome, release, serving_release,
    cpu_model, avx2, fma, nnpack, use_nnpack, cpu_capability, verified, latency_ms, conv, conv_slow2d,
    cpu_budget, cpu_affinity, cpu_quota, workers, intra_op_threads, throttled, message; merged with
    C(aggregate: true), so the last row a host set wins) and, once per play,
    C(pytorch_backend_targets) (the play's hosts: C(ansible_play_hosts_all), which a C(--limit) has already
    narrowed)."
  - "The outcome of a host is the one the role set: C(served), C(rolled_back), C(kept) (the new release was
    refused, the old one kept serving), C(failed), C(unverified) (deployed with C(pytorch_backend_verify) off) or
    C(checked) (a C(--check) run). The count line names the last two only when some host has them.
    A target host the role set nothing for is C(failed) or
    C(unreachable) as the run's stats say, otherwise C(not reached): its batch never ran because an earlier
    batch stopped the rollout."
  - "Column CONV: which backend the deployed models' Conv2d layers run on at batch 1 and 16 as the service reports
    it (e.g. C(Mkldnn), or C(1:Slow2d! 16:Mkldnn)); a host with layers on C(Slow2d) gets a WARNING line."
  - "Columns BUDGET, THREADS and THROTTLED: the C(cpu) object of the verified service's C(GET /v2), which the
    row carries raw (C(cpu_budget), C(cpu_affinity), C(cpu_quota) in CPUs, C(workers), C(intra_op_threads),
    C(throttled) a share from 0 to 1 or none). BUDGET is the CPUs the service may use, followed by C(quota) in
    brackets when its cgroup's CPU quota, not its affinity, set it; THREADS is workers x intra-op threads
    (C(1x2)); THROTTLED is the share of the quota's periods throttled since the service started (C(37%), C(<1%)
    for some but under half a percent), C(-) where the kernel counts no periods (no quota). Any of them is C(-)
    where the row does not say: a host that failed before verification, a run that verified nothing, a service
    too old to report C(cpu)."
  - Prints nothing when the run set no C(pytorch_backend_targets) (playbooks that do not run the role).
'''

import importlib.util
import os

# plugins/callback/ is no package (Ansible loads each file there by path, under a name of its own):
# the base the project's callbacks share is loaded by path as well
_spec = importlib.util.spec_from_file_location(
    'pytorch_backend_aggregate_callback',
    os.path.join(os.path.dirname(__file__), os.pardir, 'module_utils', 'aggregate_callback.py'))
aggregate_callback = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aggregate_callback)

OUTCOMES = ('served', 'rolled_back', 'kept', 'failed', 'unreachable', 'not reached')
# runs that verify nothing: counted only when present, so a deploy's count line stays the same
UNVERIFIED_OUTCOMES = ('unverified', 'checked')
# CONV stays last: it is the one column of unbounded width
ROW = '%-16s %-12s %-34s %-5s %-5s %-22s %-10s %-10s %-8s %-7s %-9s %-7s %-9s %s'
HEADER = ('HOST', 'OUTCOME', 'CPU', 'AVX2', 'FMA3', 'NNPACK', 'USE_NNPACK', 'CAPABILITY', 'VERIFIED', 'P50 MS',
          'BUDGET', 'THREADS', 'THROTTLED', 'CONV')


def _flag(value, no='no'):
    """yes/no for a boolean the role set (a string after some templating), '-' when it does not know."""
    if value is None or value == '':
        return '-'
    if isinstance(value, str):
        value = value.strip().lower() in ('true', 'yes', '1', 'on')
    return 'yes' if value else no


def _text(value, width=None):
    text = '-' if value is None or value == '' else str(value)
    return text[:width] if width else text


def _number(value):
    """A number the role set (templating may have made it text), None for none, a boolean or anything else."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN says nothing


def cpu_budget(row):
    """BUDGET: the CPUs the service sized its threads from; '(quota)' where the cgroup's CPU quota, not the
    affinity, set them, the case where threads sized from the affinity alone would be throttled."""
    budget = _number(row.get('cpu_budget'))
    if budget is None:
        return '-'
    quota, affinity = _number(row.get('cpu_quota')), _number(row.get('cpu_affinity'))
    if quota is not None and (affinity is None or quota < affinity):
        return '%d (quota)' % budget
    return '%d' % budget


def threads(row):
    """THREADS: workers x intra-op threads per worker, what the budget is shared out into."""
    workers, intra = _number(row.get('workers')), _number(row.get('intra_op_threads'))
    if workers is None or intra is None:
        return '-'
    return '%dx%d' % (workers, intra)


def throttled(row):
    """THROTTLED: the share of quota periods throttled since the service started, as a whole percentage."""
    share = _number(row.get('throttled'))
    if share is None or not 0 <= share <= 1:
        return '-'
    if 0 < share < 0.005:
        # rounded, it would read 0%: "never throttled", which it was not
        return '<1%'
    return '%d%%' % int(share * 100 + 0.5)


class CallbackModule(aggregate_callback.AggregateCallback):
    CALLBACK_NAME = 'fleet_report'

    def __init__(self):
        super().__init__()
        # the last failure or unreachable message of each host: explains a host the role set nothing for
        self._last_error = {}

    def _remember(self, result):
        res = result.result
        msg = res.get('msg') or res.get('stderr') or res.get('reason') or ''
        self._last_error[result.host.get_name()] = 'at task "%s": %s' % (result.task_name, str(msg).strip())

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._remember(result)

    def v2_runner_on_unreachable(self, result):
        self._remember(result)

    def _row_without_data(self, host, stats):
        if stats.failures.get(host):
            outcome = 'failed'
        elif stats.dark.get(host):
            outcome = 'unreachable'
        else:
            outcome = 'not reached'
        return {'host': host, 'outcome': outcome, 'message': self._last_error.get(host, '')}

    def v2_playbook_on_stats(self, stats):
        custom = getattr(stats, 'custom', {}) or {}
        run = custom.get('_run') or {}
        targets = run.get('pytorch_backend_targets')
        if not targets:
            return
        fleet = run.get('pytorch_backend_fleet') or {}
        rows = []
        for host in sorted(set(str(h) for h in targets)):
            data = fleet.get(host)
            if isinstance(data, dict) and data.get('outcome'):
                row = dict(data, host=host)
                row['message'] = row.get('message') or self._last_error.get(host, '')
                rows.append(row)
            else:
                rows.append(self._row_without_data(host, stats))

        self._display.banner('FLEET REPORT')
        self._display.display(ROW % HEADER)
        for r in rows:
            if 'cpu_model' in r:
                self._display.display(ROW % (r['host'], r['outcome'], _text(r.get('cpu_model'), 34),
                                             _flag(r.get('avx2')), _flag(r.get('fma')), _text(r.get('nnpack')),
                                             _text(r.get('use_nnpack')), _text(r.get('cpu_capability')),
                                             _flag(r.get('verified'), 'NO'), _text(r.get('latency_ms')),
                                             cpu_budget(r), threads(r), throttled(r), _text(r.get('conv'))))
            else:
                self._display.display(ROW % ((r['host'], r['outcome']) + ('-',) * (len(HEADER) - 2)))

        not_reached = [r['host'] for r in rows if r['outcome'] == 'not reached']
        for r in rows:
            if r['outcome'] in ('served', 'not reached'):
                continue
            about = [r['outcome']]
            if r.get('release'):
                about.append('release %s' % r['release'])
            if r.get('serving_release'):
                about.append('serving %s' % r['serving_release'])
            self._display.display('%s (%s): %s' % (r['host'], ', '.join(about), _text(r.get('message')).strip()))
        for r in rows:
            if r.get('conv_slow2d'):
                self._display.display('WARNING: %s: Conv2d layers fall to the slow direct path (Slow2d) in %s'
                                      % (r['host'], ', '.join(str(m) for m in r['conv_slow2d'])))
        if not_reached:
            self._display.display('not reached (the rollout stopped before their batch): %s' % ', '.join(not_reached))

        counts = dict((o, 0) for o in OUTCOMES + UNVERIFIED_OUTCOMES)
        for r in rows:
            counts[r['outcome'] if r['outcome'] in counts else 'failed'] += 1
        shown = OUTCOMES + tuple(o for o in UNVERIFIED_OUTCOMES if counts[o])
        self._display.display(', '.join('%s %d' % (o.replace('_', ' '), counts[o]) for o in shown))
