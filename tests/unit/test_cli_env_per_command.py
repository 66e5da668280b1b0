"""BUTTE_<FLAG> variables are defaults of the subcommand being run only: a value that one
command takes and another refuses (BUTTE_OUTPUT=json: `tasks` has json output, `top` not)
must not stop every command."""

from __future__ import annotations

import pytest

from butte.cli.common import CliError
from butte.cli.main import build_parser


def test_a_value_another_command_refuses_does_not_break_this_one() -> None:
    argv = ["agents", "--master", "127.0.0.1:14499"]
    args = build_parser(argv, {"BUTTE_OUTPUT": "json"}).parse_args(argv)
    assert args.output == "json"


def test_the_command_that_refuses_it_still_says_so() -> None:
    argv = ["top", "--master", "127.0.0.1:14499"]
    with pytest.raises(CliError, match="BUTTE_OUTPUT='json': choose from"):
        build_parser(argv, {"BUTTE_OUTPUT": "json"}).parse_args(argv)
