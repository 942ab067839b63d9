# SPDX-License-Identifier: Apache-2.0
"""`cpmctl train --follow` in a real terminal: tmux runs it against the real cpmd (tiny random
checkpoint, CPU) in a 70-column window, and the screen is captured at two moments of the job. The
progress line must be redrawn in place: one line, on the same row, showing a later step the second
time, never wrapped, with the job's other news printed above it; at the end the screen holds the
final step once and the outcome.
"""
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import unittest

from cpmd_harness import Daemon, binary, make_tiny_model

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
FIT = os.path.join(DATA, "train", "fit32")
WIDTH = 70  # narrower than the progress line: it must be cut, or it would wrap and not redraw
STEPS = 20
PROGRESS = re.compile(r"^step (\d+)/%d " % STEPS)


@unittest.skipIf(shutil.which("tmux") is None, "needs tmux (deploy/debian-packages.txt)")
class CpmctlTerminalTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="cpmctl-tty-")
        model = make_tiny_model(os.path.join(cls.tmp.name, "tiny"))
        cls.daemon = Daemon("--model", model).start()
        cls.daemon.wait_serving("cpm.v1.Ocr")
        root = os.path.join(cls.tmp.name, "fit")
        os.makedirs(os.path.join(root, "images"))
        with open(os.path.join(FIT, "labels.csv")) as f:
            lines = f.read().splitlines()[:5]
        for line in lines[1:]:
            shutil.copy(os.path.join(FIT, line.split(",")[0]), os.path.join(root, line.split(",")[0]))
        cls.labels = os.path.join(root, "labels.csv")
        with open(cls.labels, "w") as f:
            f.write("\n".join(lines) + "\n")
        cls.socket = f"cpmctl-test-{os.getpid()}"  # a tmux server of our own

    @classmethod
    def tearDownClass(cls):
        subprocess.run(["tmux", "-L", cls.socket, "kill-server"], capture_output=True)
        cls.daemon.stop_cleanly()
        cls.tmp.cleanup()

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)

    def screen(self):
        """The visible rows of the pane, trailing blanks dropped."""
        rows = self.tmux("capture-pane", "-p", "-t", "follow").stdout.split("\n")
        while rows and not rows[-1].strip():
            rows.pop()
        return rows

    def progress_rows(self, rows):
        return [(i, int(PROGRESS.match(r).group(1))) for i, r in enumerate(rows) if PROGRESS.match(r)]

    def one_progress_row(self, rows):
        found = self.progress_rows(rows)
        self.assertEqual(len(found), 1, "not one progress line:\n" + "\n".join(rows))
        return found

    def wait_screen(self, what, predicate, timeout=300):
        deadline = time.time() + timeout
        rows = []
        while time.time() < deadline:
            rows = self.screen()
            if predicate(rows):
                return rows
            time.sleep(0.1)
        self.fail(f"timed out waiting for {what}; the screen:\n" + "\n".join(rows))

    def test_follow_redraws_one_progress_line_in_place(self):
        command = " ".join(shlex.quote(a) for a in [
            binary("cpmctl"), "--server", self.daemon.address, "train", self.labels, "--name", "tty",
            "--max-steps", str(STEPS), "--logging-steps", "1", "--eval-steps", "0", "--eval-size", "1",
            "--eval-max-new-tokens", "4", "--lora-r", "4", "--follow"])
        # The shell stays after cpmctl so that the last screen can be read; stdout is the terminal.
        self.tmux("new-session", "-d", "-s", "follow", "-x", str(WIDTH), "-y", "30",
                  f"{command}; echo EXIT=$?; sleep 600")

        first = self.wait_screen("a progress line", lambda rows: self.progress_rows(rows))
        [(row1, step1)] = self.one_progress_row(first)
        second = self.wait_screen(
            "a later step", lambda rows: any(step > step1 for _, step in self.progress_rows(rows)))
        [(row2, step2)] = self.one_progress_row(second)  # still one line: redrawn, not appended
        self.assertEqual(row1, row2, "\n".join(second))
        self.assertGreater(step2, step1)
        for rows in (first, second):
            screen = "\n".join(rows)
            # The last row, cut to the width: nothing wrapped below it.
            self.assertEqual(row1, len(rows) - 1, screen)
            self.assertLess(len(rows[row1]), WIDTH, screen)
            self.assertRegex(rows[row1], r"^step \d+/%d \[#*\.*\] +\d+%%  loss \d" % STEPS)
            # Above it: the upload's own bar, redrawn to 100% once, and the job's header.
            self.assertEqual(len(re.findall(r"(?m)^uploading \[", screen)), 1, screen)
            self.assertRegex(screen, r"(?m)^uploading \[#+\] 100%")
            self.assertEqual(len(re.findall(r"(?m)^job [0-9a-f]+ \(tty\): (running|queued)", screen)), 1, screen)

        final = self.wait_screen("the end", lambda rows: any(r.startswith("EXIT=") for r in rows))
        self.assertIn("EXIT=0", final)
        progress = self.progress_rows(final)
        self.assertEqual([step for _, step in progress], [STEPS], "\n".join(final))
        text = "\n".join(final)
        self.assertIn("state running -> succeeded", text)
        self.assertRegex(text, r"job [0-9a-f]+ succeeded; adapter tty is registered")
        # The news went above the progress line, which stayed last until the job ended.
        self.assertLess(text.index("state running -> succeeded"), text.index(f"step {STEPS}/{STEPS}"))


if __name__ == "__main__":
    unittest.main()
