"""One worker of `bench/run.sh peers` on camunda-external-task-client-python3.

Subscribes to one topic with the client's documented `ExternalTaskWorker`, completes every task
(after PEER_DELAY_MS, the task body) and records when its handler got each task. The records are
written to PEER_PICKUP_FILE when the process is stopped, so that no file write sits on the
measured path.

Configured with the benchmark's common maxTasks, lock duration and long poll
(asyncResponseTimeout); the client has no setting for concurrency: it runs the tasks of a fetch
one after the other, and opens a new HTTP connection per call (plain `requests.post`).
"""

import os
import signal
import sys
import time
from importlib.metadata import version

from camunda.external_task.external_task_worker import ExternalTaskWorker


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"missing environment variable {name}")
    return value


PICKUP_FILE = env("PEER_PICKUP_FILE")
DELAY = int(env("PEER_DELAY_MS")) / 1000.0
pickups = []


def stop(_signum, _frame):
    with open(PICKUP_FILE, "w", encoding="utf-8") as out:
        out.writelines(pickups)
    os._exit(0)


def handle(task):
    pickups.append(f"{task.get_task_id()} {time.time_ns() // 1_000_000}\n")
    if DELAY > 0:
        time.sleep(DELAY)
    return task.complete({})


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    config = {
        "maxTasks": int(env("PEER_MAX_TASKS")),
        "lockDuration": int(env("PEER_LOCK_DURATION_MS")),
        "asyncResponseTimeout": int(env("PEER_LONG_POLL_MS")),
        "isDebug": False,
    }
    worker = ExternalTaskWorker(
        worker_id=env("PEER_WORKER_ID"), base_url=env("PEER_ENGINE_URL"), config=config
    )
    print(
        f"ready camunda-external-task-client-python3 {version('camunda-external-task-client-python3')}",
        flush=True,
    )
    worker.subscribe(env("PEER_TOPIC"), handle)


if __name__ == "__main__":
    sys.exit(main())
