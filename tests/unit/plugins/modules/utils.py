# -*- coding: utf-8 -*-
# Copyright: rayops.disk contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive a module's ``main()`` in-process, as community.docker's unit tests do."""

from __future__ import annotations

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class AnsibleExitJson(Exception):
    """The module called ``exit_json``; ``args[0]`` is its result."""


class AnsibleFailJson(Exception):
    """The module called ``fail_json``; ``args[0]`` is its result."""


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, **kwargs):
    kwargs["failed"] = True
    raise AnsibleFailJson(kwargs)


def module_runner(monkeypatch):
    """Patch exit/fail; return ``run(main, args, check_mode=False)`` giving the result (see ``run_module``)."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)

    def run(main, args, check_mode=False):
        args = dict(args)
        if check_mode:
            args["_ansible_check_mode"] = True
        with patch_module_args(args):
            with pytest.raises(AnsibleExitJson) as exited:
                main()
        return exited.value.args[0]

    return run


def fail_module(main, args):
    """Run ``main()`` expecting ``fail_json``; return its result (use with the run_module fixture active)."""
    with patch_module_args(args):
        with pytest.raises(AnsibleFailJson) as failed:
            main()
    return failed.value.args[0]
