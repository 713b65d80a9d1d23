"""Progress bars: on standard error of a terminal, never elsewhere, never in --json output; and the command line
exits quietly when its reader closes the pipe (``crossbar map ... | head``)."""

import contextlib
import fcntl
import json
import os
import pty
import struct
import sys
import termios
import threading

import pytest
import torch
from torch import nn

import crossbar
from crossbar import cli, progress


@contextlib.contextmanager
def stderr_on_a_terminal():
    """Within the block, standard error is a pseudo-terminal; the bytes it received are in the yielded list
    (complete after the block)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows of 100 columns
    received = []

    def drain():  # a terminal's buffer is small: read while the code writes
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end is closed: all read
                return
            if not chunk:
                return
            received.append(chunk)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    stream = os.fdopen(follower, "w", buffering=1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "stderr", stream)
            yield received
    finally:
        stream.close()
        thread.join(10)
        os.close(leader)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5))


def test_silent_when_standard_error_is_not_a_terminal(capsys):
    crossbar.compile(small_model(), "default")  # default chip: IR drop on, so both bars would run
    assert capsys.readouterr().err == ""


def test_progress_true_writes_bars_to_standard_error(capsys):
    analog = crossbar.compile(small_model(), "default", progress=True)
    crossbar.estimate(analog, torch.rand(2, 40), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    for bar in ("programming tiles", "IR-drop matrices", "counting activity"):
        assert bar in captured.err, captured.err


def test_a_terminal_gets_bars_unless_quiet(tmp_path):
    with stderr_on_a_terminal() as shown:
        crossbar.compile(small_model(), "default")
    assert b"programming tiles" in b"".join(shown) and b"IR-drop matrices" in b"".join(shown)
    path = tmp_path / "model.pt"
    torch.save(small_model(), path)
    with stderr_on_a_terminal() as shown:
        with progress.quiet():
            crossbar.compile(small_model(), "default")
        crossbar.compile(small_model(), "default", progress=False)
        for quiet in (["--quiet", "map"], ["map", "-q"]):
            assert cli.main([*quiet, str(path)]) == 0
    assert b"".join(shown) == b""
    assert progress.enabled(True) and not progress.enabled(None), "not a terminal again, and quiet has ended"


def test_cli_on_a_terminal_bars_on_stderr_json_alone_on_stdout(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save(small_model(), path)
    with stderr_on_a_terminal() as shown:
        code = cli.main(["estimate", str(path), "--input-shape", "2,40", "--json"])
    assert code == 0
    assert b"programming tiles" in b"".join(shown) and b"counting activity" in b"".join(shown)
    assert json.loads(capsys.readouterr().out)["batch"] == 2  # nothing but the JSON on standard output


def test_broken_pipe_exits_quietly(tmp_path, capsys, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(*[nn.Linear(8, 8) for _ in range(50)]), path)
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first line is written, as `| head` does after its lines
    with os.fdopen(writer, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        code = cli.main(["map", str(path), "--json"])
        monkeypatch.undo()
    assert (code, capsys.readouterr().err) == (0, "")


@pytest.mark.parametrize("flag", ["--quiet", "-q"])
def test_quiet_is_accepted_by_every_command(flag):
    parser = cli.build_parser()
    for command in (["demo"], ["map", "m.pt"], ["sweep", "s.yaml"], ["sensitivity", "digits-mlp"]):
        assert parser.parse_args([*command, flag]).quiet
        assert parser.parse_args([flag, *command]).quiet
        assert not parser.parse_args(command).quiet
