"""ProcOS Python runner: runs /in/script.py with `inputs` and `outputs`.

The script sees:
  inputs     -- dict of the task's variables (from /in/input.json)
  outputs    -- dict to fill; written to /out/output.json, they become process variables
  BpmnError  -- raise BpmnError(code, message) for a business error the model catches

Exit codes: 0 done, 3 BPMN error (/out/output.json holds errorCode, errorMessage, outputs),
1 any other exception (the traceback goes to stderr and into the incident's details).

A small output document (at most INLINE_OUTPUT_LIMIT bytes) is also printed on stdout, after
OUTPUT_LINE: the worker then has it from the logs it follows anyway, without fetching the file.
Once the outcome is settled (exit code 0 or 3: the output document written), the last stdout
line is EXIT_LINE and the exit code: nothing the process does after it can change the outcome,
so the worker goes on without waiting for the interpreter's exit and the sandbox's teardown.

A warm container (PROCOS_WAIT_FOR_INPUT set) is started before its task is known: it waits
for /in/go, which the worker writes after the task's files, and gives up with exit code 75
after PROCOS_WAIT_SECONDS without a task. With PROCOS_WAIT_FOR_INPUT=stdin (a namespace
sandbox, whose stdin the worker holds) it waits for the line "go" on stdin instead, without
polling; stdin closed before that line means the worker is gone, and it gives up at once.
"""

import json
import os
import select
import sys
import time

GAVE_UP_WAITING = 75
OUTPUT_LINE = "\x1eprocos-output "
EXIT_LINE = "\x1eprocos-exit "
INLINE_OUTPUT_LIMIT = 8192


class BpmnError(Exception):
    """A business error for a boundary error event in the model."""

    def __init__(self, code, message="", outputs=None):
        super().__init__(message or code)
        self.code = str(code)
        self.message = str(message)
        self.outputs = outputs or {}


def write_output(document):
    text = json.dumps(document)  # ASCII, one line
    with open("/out/output.json", "w", encoding="utf-8") as out:
        out.write(text)
    if len(text) <= INLINE_OUTPUT_LIMIT:
        sys.stdout.write("\n" + OUTPUT_LINE + text + "\n")
        sys.stdout.flush()


def wait_for_task():
    seconds = float(os.environ.get("PROCOS_WAIT_SECONDS", "600"))
    if os.environ.get("PROCOS_WAIT_FOR_INPUT") == "stdin":
        ready, _, _ = select.select([sys.stdin], [], [], seconds)
        return bool(ready) and sys.stdin.readline().strip() == "go"
    deadline = time.monotonic() + seconds
    while not os.path.exists("/in/go"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def main():
    if os.environ.get("PROCOS_WAIT_FOR_INPUT") and not wait_for_task():
        return GAVE_UP_WAITING
    try:
        with open("/in/script-name", encoding="utf-8") as f:
            name = f.read().strip() or "script.py"
    except OSError:
        name = "script.py"
    with open("/in/input.json", encoding="utf-8") as f:
        inputs = json.load(f)
    with open("/in/script.py", encoding="utf-8") as f:
        source = f.read()
    outputs = {}
    scope = {"__name__": "__main__", "inputs": inputs, "outputs": outputs, "BpmnError": BpmnError}
    try:
        exec(compile(source, name, "exec"), scope)
    except BpmnError as error:
        write_output({"errorCode": error.code, "errorMessage": error.message, "outputs": error.outputs})
        return 3
    except BaseException:  # the script's failure, whatever it is, is the task's failure
        import traceback  # only on this path: a waiting runner starts faster without it

        traceback.print_exc()
        return 1
    try:
        write_output(scope.get("outputs", outputs))
    except (TypeError, ValueError) as error:
        print(f"outputs are not JSON: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    if code in (0, 3):
        sys.stdout.write("\n" + EXIT_LINE + str(code) + "\n")
        sys.stdout.flush()
    sys.exit(code)
