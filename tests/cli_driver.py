"""Runs many command lines of ``python -m edn_jax.main`` in one process: the imports once, then one
forked child per command line (a fresh absl flag state each), as a user's shell would run them.

  python tests/cli_driver.py CASES.json OUT.json

CASES.json: [{"argv": [...], "timeout": seconds}, ...]. OUT.json: [{"rc": int, "stderr": str}, ...];
rc 124 is a command line that ran past its timeout (killed).
"""

import json
import os
import signal
import sys
import tempfile
import time


def run_case(argv: list[str], timeout: float) -> dict:
    from absl import app

    from edn_jax import command_line, main

    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: the command line, its stderr to the file
            os.dup2(err.fileno(), 2)
            os.dup2(err.fileno(), 1)
            sys.argv = ["edn_jax.main", *argv]
            try:
                app.run(main.main, flags_parser=command_line.parse_flags)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - what an uncaught exception prints, as python would
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = 124
                break
            time.sleep(0.02)
        err.seek(0)
        return {"rc": rc, "stderr": err.read().decode(errors="replace")}


if __name__ == "__main__":
    cases = json.load(open(sys.argv[1]))
    import edn_jax.main  # noqa: F401  (absl, ml_collections and flax imported once, before the forks)
    import edn_jax.pose.pipeline  # noqa: F401
    results = [run_case(c["argv"], c.get("timeout", 60)) for c in cases]
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
