// One worker of `bench/run.sh peers` on camunda-external-task-client-js: subscribes to one topic,
// completes every task (after PEER_DELAY_MS, the task body), and records when its handler got
// each task. The records are written to PEER_PICKUP_FILE when the process is stopped, so that no
// file write sits on the measured path.
//
// Configured for throughput as the client documents it: long polling (asyncResponseTimeout),
// maxParallelExecutions = maxTasks so that tasks run concurrently up to the benchmark's common
// limit, and the benchmark's common lock duration. `interval` is the pause after every fetch
// (default 300 ms, which alone caps a worker at maxTasks per 300 ms) and the re-check period
// while all slots are busy; with long polling the pause only delays the next fetch, so it is
// PEER_JS_INTERVAL_MS (0 by default; see bench/README.md).
import { readFileSync, writeFileSync } from "node:fs";

import { Client } from "camunda-external-task-client-js";

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`missing environment variable ${name}`);
  }
  return value;
}

const maxTasks = Number(env("PEER_MAX_TASKS"));
const delay = Number(env("PEER_DELAY_MS"));
const pickupFile = env("PEER_PICKUP_FILE");
const pickups = [];

function stop() {
  writeFileSync(pickupFile, pickups.join(""));
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

const client = new Client({
  baseUrl: env("PEER_ENGINE_URL"),
  workerId: env("PEER_WORKER_ID"),
  maxTasks,
  maxParallelExecutions: maxTasks,
  lockDuration: Number(env("PEER_LOCK_DURATION_MS")),
  asyncResponseTimeout: Number(env("PEER_LONG_POLL_MS")),
  interval: Number(env("PEER_JS_INTERVAL_MS")),
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

client.subscribe(env("PEER_TOPIC"), async ({ task, taskService }) => {
  pickups.push(`${task.id} ${Date.now()}\n`);
  if (delay > 0) {
    await sleep(delay);
  }
  await taskService.complete(task);
});

const manifest = new URL(
  "./node_modules/camunda-external-task-client-js/package.json",
  import.meta.url
);
const { version } = JSON.parse(readFileSync(manifest, "utf-8"));
console.log(`ready camunda-external-task-client-js ${version}`);
