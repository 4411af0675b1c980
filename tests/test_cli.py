"""The command line as a user meets it: every option says what it is for, the help shows examples that parse, a
missing --out is one line, --version, --debug after the command."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from budgetseg import __version__
from budgetseg.cli import EXAMPLES, build_parser, main
from budgetseg.errors import BudgetsegError


def commands(parser: argparse.ArgumentParser, prog: str = "budgetseg"):
    """(prog, parser) of the parser and of every (sub)command below it."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prog} {name}")


ALL = list(commands(build_parser()))


def test_every_command_is_walked():
    names = {prog for prog, _ in ALL}
    assert {"budgetseg sweep", "budgetseg report", "budgetseg data fashion-scenes", "budgetseg predict"} <= names
    assert len(names) == 19  # budgetseg, its 17 commands and data fashion-scenes


@pytest.mark.parametrize("prog, parser", ALL, ids=[prog for prog, _ in ALL])
def test_every_option_has_help(prog, parser):
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{prog}: {action.option_strings or action.dest} has no help"
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"{prog} {choice.dest} has no help"
    assert parser.description, f"{prog} has no description"


@pytest.mark.parametrize("prog, parser", ALL, ids=[prog for prog, _ in ALL])
def test_global_options_before_and_after_the_command(prog, parser):
    options = {s for a in parser._actions for s in a.option_strings}
    assert {"--debug", "--max-pixels"} <= options


def test_top_level_help_shows_examples_that_parse(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out
    lines = [line.strip() for line in EXAMPLES.splitlines() if line.strip().startswith("budgetseg ")]
    commands = {line.split()[1] for line in lines}
    assert len(commands) >= 8
    for line in lines:
        if "COMMAND" not in line:
            args = build_parser().parse_args(shlex.split(line)[1:])  # parses: an error would raise
            assert args.func is not None


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"budgetseg {__version__}"


def test_debug_after_the_command_shows_the_traceback(capsys):
    assert main(["plan", "--budget", "4x"]) == 2  # one line
    assert capsys.readouterr().err.count("\n") == 1
    for argv in (["--debug", "plan", "--budget", "4x"], ["plan", "--budget", "4x", "--debug"]):
        with pytest.raises(BudgetsegError):
            main(argv)


def test_max_pixels_after_the_command():
    assert build_parser().parse_args(["cost", "--max-pixels", "100"]).max_pixels == 100
    args = build_parser().parse_args(["--max-pixels", "100", "cost"])  # before it: not reset by the command's
    assert args.max_pixels == 100 and args.debug is False


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "configs/fashion_semantic.yaml"],
        ["sweep", "configs/fashion_semantic.yaml", "--n", "8"],
        ["compare", "configs/fashion_instance.yaml", "--budgets", "0.3d"],
    ],
)
def test_missing_out_is_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("budgetseg: error: ") and err.count("\n") == 1 and "--out" in err


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_sweep_and_compare_take_a_config_file_only(command, tmp_path, capsys):
    """Their help says so, and a run folder given is one line."""
    (tmp_path / "config.yaml").write_text("task: instance\n")
    budgets = ["--budgets", "1d"] if command == "compare" else []
    assert main([command, str(tmp_path), "--out", str(tmp_path / "x"), *budgets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "takes a config file" in err
    helps = {prog: " ".join(p.format_help().split()) for prog, p in ALL}  # lines unwrapped
    assert "run folder to continue" not in helps[f"budgetseg {command}"]
    assert "run folder to continue" in helps["budgetseg run"]


def test_options_are_only_those_a_command_takes():
    helps = {prog: " ".join(p.format_help().split()) for prog, p in ALL}  # lines unwrapped
    assert "plain folder of photos" in helps["budgetseg select"]
    assert "plain folder of photos" not in helps["budgetseg stats"]
    assert "--device" in helps["budgetseg predict"] and "--device" not in helps["budgetseg evaluate"]
    assert "--resume" in helps["budgetseg run"] and "--resume" not in helps["budgetseg sweep"]


def test_messages_go_through_logging_and_the_cli_shows_them(tmp_path, capsys):
    """The library logs (logger "budgetseg"); a run's Logger also appends to its log.txt, on rank 0 only; the CLI
    shows the messages on stderr, warnings marked, and nothing stays attached after it."""
    import logging

    from budgetseg.runlog import LOGGER, Logger, to_stderr

    log = tmp_path / "log.txt"
    with to_stderr():
        Logger(log, main=True)("f_theta: trained")
        Logger(tmp_path / "other.txt", main=False)("said once, by rank 0")
        LOGGER.warning("a run without results")
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("] f_theta: trained") and err[1] == "warning: a run without results" and len(err) == 2
    assert log.read_text().endswith("] f_theta: trained\n") and not (tmp_path / "other.txt").exists()
    Logger(log, main=True)("quiet")  # outside the CLI: in log.txt, not on stderr
    assert capsys.readouterr().err == "" and log.read_text().count("\n") == 2
    assert LOGGER.level == logging.NOTSET and not LOGGER.handlers


def test_a_reader_that_leaves_early_is_no_error():
    """`budgetseg cost --json | head -1`: stdout's reader closes the pipe; the command stops quietly (no
    "Broken pipe" error line, no traceback), with the status of a process SIGPIPE ends."""
    code = "import sys; from budgetseg.cli import main; sys.exit(main(['cost', '--json']))"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before the command writes: its first write finds no reader
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == ""
