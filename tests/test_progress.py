"""Progress output: bars on a terminal, whole lines in a log file or pipe, nothing in quiet mode."""

import subprocess
import sys


def _run(code: str, quiet: str = "0") -> str:
    """Run ``code`` in a fresh process whose stderr is a pipe, as in `make demo > log 2>&1`."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"EDGEFT_QUIET": quiet, "PATH": ""})
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_a_bar_written_to_a_pipe_is_one_line_not_frames():
    err = _run("from edgeft import progress\n"
               "for _ in progress.bar(range(500), desc='decode train', unit='img'): pass\n")
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("decode train: 500/500 img in "), err


def test_an_epoch_bar_prints_one_line_per_finished_epoch():
    err = _run("from edgeft import progress\n"
               "b = progress.bar(total=3, desc='epochs', unit='epoch', leave=True)\n"
               "b.update(0)\n"
               "for e in range(3):\n"
               "    for _ in progress.bar(range(50), desc=f'epoch {e + 1}/3', unit='batch'): pass\n"
               "    b.update(1)\n"
               "    b.set_postfix(loss='0.5', val_acc='0.9')\n"
               "b.close()\n")
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 6, err
    assert [line for line in lines if line.startswith("epochs:")][2].startswith("epochs: 3/3 epoch in ")
    assert lines[1].endswith("loss=0.5, val_acc=0.9")


def test_quiet_mode_prints_nothing():
    assert _run("from edgeft import progress\nfor _ in progress.bar(range(5), desc='x'): pass\n"
                "progress.info('status')\n", quiet="1") == ""
