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

A warm sandbox (PROCOS_WAIT_FOR_INPUT=stdin) is started before its task is known: it waits on
its stdin, which the worker holds, without polling, and gives up with exit code 75 after
PROCOS_WAIT_SECONDS without a task; stdin closed before the task means the worker is gone, and
it gives up at once. The task comes as one line: "go" when its files are in /in already (a
namespace sandbox, whose /in is a directory of the worker's), or "go N" followed by N files,
each a line "SIZE NAME" and SIZE bytes (a container, attached to by the worker: no archive
upload into /in, which costs the Docker engine a helper process per call).
"""

import json
import os
import select
import sys

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


# The task's files handed over on stdin ("go N"), by name; read instead of /in's.
handed = {}


def wait_for_task():
    """Whether the task came (its files, if any, in `handed`) before the wait ran out."""
    seconds = float(os.environ.get("PROCOS_WAIT_SECONDS", "600"))
    stdin = sys.stdin.buffer
    ready, _, _ = select.select([stdin], [], [], seconds)
    if not ready:
        return False
    words = stdin.readline().split()
    if not words or words[0] != b"go":
        return False
    for _ in range(int(words[1]) if len(words) > 1 else 0):
        size, name = stdin.readline().rstrip(b"\n").split(b" ", 1)
        content = stdin.read(int(size))
        if len(content) != int(size):
            return False
        handed[name.decode("utf-8")] = content
    return True


def read_input(name):
    if name in handed:
        return handed[name].decode("utf-8")
    with open("/in/" + name, encoding="utf-8") as f:
        return f.read()


def main():
    if os.environ.get("PROCOS_WAIT_FOR_INPUT") and not wait_for_task():
        return GAVE_UP_WAITING
    try:
        name = read_input("script-name").strip() or "script.py"
    except OSError:
        name = "script.py"
    try:
        # The step's W3C trace context, for OpenTelemetry in the script (its SDKs read
        # TRACEPARENT): handed over as a file, since a warm sandbox's environment was fixed
        # before the task was known.
        os.environ["TRACEPARENT"] = read_input("traceparent").strip()
    except OSError:
        pass
    inputs = json.loads(read_input("input.json"))
    source = read_input("script.py")
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
