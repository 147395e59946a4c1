"""ProcOS Python runner: runs /in/script.py with `inputs` and `outputs`.

The script sees:
  inputs     -- dict of the task's variables (from /in/input.json)
  outputs    -- dict to fill; written to /out/output.json, they become process variables
  BpmnError  -- raise BpmnError(code, message) for a business error the model catches

Exit codes: 0 done, 3 BPMN error (/out/output.json holds errorCode, errorMessage, outputs),
1 any other exception (the traceback goes to stderr and into the incident's details).
"""

import json
import os
import sys
import traceback


class BpmnError(Exception):
    """A business error for a boundary error event in the model."""

    def __init__(self, code, message="", outputs=None):
        super().__init__(message or code)
        self.code = str(code)
        self.message = str(message)
        self.outputs = outputs or {}


def write_output(document):
    text = json.dumps(document)
    with open("/out/output.json", "w", encoding="utf-8") as out:
        out.write(text)


def main():
    name = os.environ.get("PROCOS_SCRIPT_NAME", "script.py")
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
        traceback.print_exc()
        return 1
    try:
        write_output(scope.get("outputs", outputs))
    except (TypeError, ValueError) as error:
        print(f"outputs are not JSON: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
